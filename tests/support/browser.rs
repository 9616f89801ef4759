//! A real browser for the web UI's tests: Debian's headless Chromium driven over WebDriver
//! (`chromedriver`) with fantoccini.
//!
//! Each [`Browser`] is its own `chromedriver` on a free loopback port and a Chromium with a
//! fresh profile; both end when it is dropped (chromedriver runs in a process group of its
//! own, which Chromium joins, and the group is killed). [`Browser::shot`] saves a PNG of the page to
//! the screenshots directory: `BOOTFACTORY_SCREENSHOTS`, else `<target>/ui-screenshots/`.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use super::tools;

/// A headless Chromium session.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Whether Chromium and its driver are installed (a failure when tests require tools).
pub fn available() -> bool {
    tools::have("chromium") && tools::have("chromedriver")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a 1280×900 window.
    pub async fn start() -> Browser {
        Self::start_sized(1280, 900).await
    }

    /// Starts chromedriver and a headless Chromium with a `width`×`height` window.
    pub async fn start_sized(width: u32, height: u32) -> Browser {
        let port = tools::free_port();
        // Its own process group: Chromium and its helpers join it, so dropping the Browser
        // ends all of them even when a test panics before `close`.
        let driver = Command::new("chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        tools::wait_listening(([127, 0, 0, 1], port).into());
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("WebDriver session");
        client
            .set_window_size(width, height)
            .await
            .expect("window size");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
    }

    /// The element matching the CSS `selector`, waiting up to 10 s for it to appear.
    pub async fn find(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("no element {selector}: {e}"))
    }

    /// Clicks the element matching `selector`. A page that replaces parts of itself (the
    /// machines page's live table) can swap the element between finding and clicking it: the
    /// click is retried on a fresh one then.
    pub async fn click(&self, selector: &str) {
        for attempt in 0.. {
            match self.find(selector).await.click().await {
                Ok(()) => return,
                Err(e) if attempt < 10 && e.to_string().contains("stale element") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("click {selector}: {e}"),
            }
        }
    }

    /// Whether an element matches `selector` now.
    pub async fn has(&self, selector: &str) -> bool {
        self.client.find(Locator::Css(selector)).await.is_ok()
    }

    /// The page's text (`document.body.innerText`).
    pub async fn text(&self) -> String {
        self.client
            .execute("return document.body.innerText", vec![])
            .await
            .expect("innerText")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The current URL.
    pub async fn url(&self) -> url::Url {
        self.client.current_url().await.expect("current url")
    }

    /// Waits up to 10 s for the page text to contain `needle`; panics with the text if not.
    pub async fn wait_for_text(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text().await;
            if text.contains(needle) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "page never showed {needle:?}; it shows:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the element matching `selector` (waiting up to 10 s for it), read again if
    /// the page replaced the element between finding and reading it.
    pub async fn element_text(&self, selector: &str) -> String {
        for attempt in 0.. {
            match self.find(selector).await.text().await {
                Ok(text) => return text,
                Err(e) if attempt < 20 && e.to_string().contains("stale element") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("text of {selector}: {e}"),
            }
        }
        unreachable!()
    }

    /// The text of the element matching `selector` once it contains `needle`, waiting up to
    /// 10 s. After a form submission the page (or the script updating it) replaces the element:
    /// the old one may still be found, or go stale between finding and reading it, so both are
    /// retried rather than read once.
    pub async fn element_text_with(&self, selector: &str, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = match self.client.find(Locator::Css(selector)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{selector} never showed {needle:?}; it shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot of the page as `<screenshots>/<name>.png`.
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Ends the session (Chromium exits) and chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
        // Drop ends chromedriver's process group.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group we created for chromedriver: it, Chromium and Chromium's helpers.
        let group = nix::unistd::Pid::from_raw(-(self.driver.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// Where screenshots go.
pub fn screenshots_dir() -> PathBuf {
    std::env::var_os("BOOTFACTORY_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../ui-screenshots"))
}
