//! The builds page (`/ui/builds`): warming the cache from the page (in the background with
//! live progress, and waiting for the report), the finished builds listed under recent
//! builds and cached assets with their sizes, a broken boot chain refused with the API's 409
//! naming the missing piece, and a warm-up POST without the CSRF token refused.

use std::time::{Duration, Instant};

use bootfactory::ui::builds::human_bytes;
use serde_json::Value;

use crate::auth::{admin_token, csrf_of, form, log_in, session_cookie};
use crate::support::browser::{self, Browser};
use crate::support::{self, TestServer};

/// `GET /api/v1/builds` with the admin token.
async fn api_builds(s: &TestServer) -> Value {
    reqwest::Client::new()
        .get(format!("{}/api/v1/builds", s.url))
        .bearer_auth(admin_token(s))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits up to `secs` for the page to have an element matching `css`.
async fn wait_for(b: &Browser, css: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !b.has(css).await {
        assert!(
            Instant::now() < deadline,
            "no {css} after {secs} s; the page shows:\n{}",
            b.text().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Scrolls the element matching `css` to the top of the window (for a screenshot).
async fn scroll_to(b: &Browser, css: &str) {
    b.client
        .execute(
            "document.querySelector(arguments[0]).scrollIntoView()",
            vec![Value::String(css.to_string())],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_from_the_page_shows_progress_then_recent_builds_and_cached_assets() {
    if !browser::available() {
        return;
    }
    let s = crate::fixture_server(&[("build.maxConcurrency", "1")]).await;
    let id = support::post_schematic(
        &s.url,
        "customization: {systemExtensions: {officialExtensions: [siderolabs/gvisor]}}",
    )
    .await;
    let b = Browser::start().await;
    log_in(&b, &s, "/ui/builds").await;
    assert_eq!(b.url().await.path(), "/ui/builds");
    b.wait_for_text("Nothing is building now.").await;
    b.wait_for_text("The store holds no built asset yet.").await;

    // A warm-up in the background: the page comes back at once and lists its builds.
    b.find("#warm-schematic")
        .await
        .select_by_value(&id)
        .await
        .unwrap();
    b.find("#warm-version")
        .await
        .select_by_value("v1.11.6")
        .await
        .unwrap();
    b.find("#warm-wait").await.click().await.unwrap();
    // Meanwhile the live fragment (what the page's script polls) shows the builds' progress.
    let (client, cookie) = session_cookie(&s).await;
    let watcher = {
        let (client, cookie, url) = (client.clone(), cookie.clone(), s.url.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut progress = None;
            while Instant::now() < deadline {
                let html = client
                    .get(format!("{url}/ui/builds/live"))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                if html.contains("class=\"card build\"") && html.contains(" written · ") {
                    progress.get_or_insert(html.clone());
                }
                if html.contains("Initramfs · metal-amd64") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            progress
        })
    };
    b.find("#warm-submit").await.click().await.unwrap();
    wait_for(&b, "#warm-continuing", 10).await;
    assert_eq!(b.url().await.path(), "/ui/builds");
    b.shot("builds-running").await;
    // The script refreshes the page's parts until the last build ended.
    wait_for(&b, "#recent", 120).await;
    let progress = watcher.await.unwrap().expect("a running build was shown");
    assert!(progress.contains("<progress"), "{progress}");
    assert!(progress.contains(&id[..12]), "{progress}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = b.text().await;
        if text.contains("Nothing is building now.")
            && text.contains("Initramfs · metal-amd64 · v1.11.6")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the warm-up never finished on the page:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Without a reload, the cached assets were refreshed too, with the sizes the API reports.
    wait_for(&b, "#cached details", 10).await;
    let recent = api_builds(&s).await["recent"].as_array().unwrap().clone();
    let initramfs = recent
        .iter()
        .find(|r| r["kind"] == "Initramfs" && r["version"] == "v1.11.6")
        .expect("the initramfs build is recorded");
    assert_eq!(initramfs["outcome"], "built", "{initramfs}");
    assert_eq!(initramfs["schematic"], id.as_str());
    let size = initramfs["bytes"].as_u64().unwrap();
    assert!(size > 0);
    // The script fetches them once the last build ended: wait for that answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let cached = b.element_text("#cached").await;
        if cached.contains(&id[..12]) && cached.contains(&human_bytes(size)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cached assets never showed the initramfs ({}):\n{cached}",
            human_bytes(size)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A warm-up waited for: the report lists what was built, with sizes and times.
    b.find("#warm-schematic")
        .await
        .select_by_value(&id)
        .await
        .unwrap();
    b.find("#warm-version")
        .await
        .select_by_value("v1.8.4")
        .await
        .unwrap();
    // The form kept "no waiting" from the background warm-up: wait this time.
    let wait = b.find("#warm-wait").await;
    assert!(!wait.is_selected().await.unwrap());
    wait.click().await.unwrap();
    b.find("#warm-submit").await.click().await.unwrap();
    wait_for(&b, "#warm-report", 120).await;
    let report = b.element_text("#warm-report").await;
    for path in ["cmdline-metal-amd64", "kernel-amd64", "initramfs-amd64.xz"] {
        assert!(report.contains(path), "{report}");
    }
    assert!(report.contains("built"), "{report}");
    let recent = api_builds(&s).await["recent"].as_array().unwrap().clone();
    let built_184 = recent
        .iter()
        .find(|r| r["kind"] == "Initramfs" && r["version"] == "v1.8.4")
        .expect("the v1.8.4 initramfs build is recorded");
    assert!(
        report.contains(&human_bytes(built_184["bytes"].as_u64().unwrap())),
        "{report}"
    );
    // Newest first.
    assert_eq!(recent[0]["version"], "v1.8.4", "{recent:?}");
    let text = b.text().await;
    assert!(text.contains("Initramfs · metal-amd64 · v1.8.4"), "{text}");
    let cached = b.element_text("#cached").await;
    assert!(
        cached.contains("v1.8.4") && cached.contains("v1.11.6"),
        "{cached}"
    );
    b.shot("builds").await;
    scroll_to(&b, "#recent").await;
    b.shot("builds-recent").await;
    scroll_to(&b, "#cached").await;
    b.shot("builds-cached").await;

    // The same warm-up again: everything comes from the cache.
    b.find("#warm-version")
        .await
        .select_by_value("v1.8.4")
        .await
        .unwrap();
    b.find("#warm-submit").await.click().await.unwrap();
    b.wait_for_text("cached already").await;
    b.close().await;

    // At 360 px the page is usable: no horizontal scrolling of the page itself.
    let narrow = Browser::start_sized(360, 800).await;
    log_in(&narrow, &s, "/ui/builds").await;
    narrow.find("#cached details").await;
    let fits = narrow
        .client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        fits,
        Value::Bool(true),
        "the page scrolls sideways at 360 px"
    );
    narrow.shot("builds-360").await;
    scroll_to(&narrow, "#live").await;
    narrow.shot("builds-360-recent").await;
    scroll_to(&narrow, "#cached").await;
    narrow.shot("builds-360-cached").await;
    narrow.close().await;
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_chain_is_refused_on_the_page_and_posts_need_the_csrf_token() {
    if !browser::available() {
        return;
    }
    let s = crate::fixture_server(&[("build.maxConcurrency", "1")]).await;
    let nope = support::post_schematic(
        &s.url,
        "customization: {systemExtensions: {officialExtensions: [siderolabs/nope]}}",
    )
    .await;
    let b = Browser::start().await;
    log_in(&b, &s, "/ui/builds").await;
    b.find("#warm-schematic")
        .await
        .select_by_value(&nope)
        .await
        .unwrap();
    b.find("#warm-version")
        .await
        .select_by_value("v1.8.4")
        .await
        .unwrap();
    b.find("#warm-submit").await.click().await.unwrap();
    wait_for(&b, "#warm-error", 30).await;
    let error = b.element_text("#warm-error").await;
    assert!(
        error.contains("extension siderolabs/nope is not in the v1.8.4 extensions catalog"),
        "{error}"
    );
    // The form keeps what was chosen, to correct it.
    let chosen = b
        .find("#warm-version option:checked")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(chosen, "v1.8.4");
    b.shot("builds-error").await;
    b.close().await;

    // The same with a plain client: the page carries the API's 409.
    let (client, cookie) = session_cookie(&s).await;
    let csrf = csrf_of(&s, &client, &cookie, "/ui/builds").await;
    let warm = |fields: Vec<(&'static str, String)>| {
        client
            .post(format!("{}/ui/builds/warm", s.url))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&fields))
            .send()
    };
    let r = warm(vec![
        ("csrf", csrf.clone()),
        ("schematic", nope.clone()),
        ("version", "v1.8.4".into()),
        ("arch", "amd64".into()),
        ("wait", "on".into()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let html = r.text().await.unwrap();
    assert!(html.contains("the boot would fail"), "{html}");
    // Wrong input is a 400 on the page, never a 500.
    for (field, value, want) in [
        ("arch", "riscv64", "unknown architecture"),
        ("boot", "../etc", "neither a boot kind"),
        ("version", "", "choose a version"),
    ] {
        let mut fields = vec![
            ("csrf", csrf.clone()),
            ("schematic", nope.clone()),
            ("version", "v1.8.4".to_string()),
            ("wait", "on".into()),
        ];
        fields.retain(|(k, _)| *k != field);
        fields.push((field, value.to_string()));
        let r = warm(fields).await.unwrap();
        assert_eq!(r.status(), 400, "{field}={value}");
        let html = r.text().await.unwrap();
        assert!(html.contains(want), "{field}={value}: {html}");
    }
    // Without the CSRF token: refused before anything is started.
    let empty = support::post_schematic(&s.url, "customization: {}").await;
    let r = warm(vec![
        ("schematic", empty.clone()),
        ("version", "v1.8.4".into()),
        ("wait", "on".into()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("CSRF token"));
    let r = warm(vec![
        ("csrf", "wrong".into()),
        ("schematic", empty),
        ("version", "v1.8.4".into()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let builds = api_builds(&s).await;
    assert!(
        builds["builds"].as_array().unwrap().is_empty()
            && builds["recent"].as_array().unwrap().is_empty(),
        "nothing was built: {builds}"
    );
    // Without a session the fragment is not served either.
    let r = client
        .get(format!("{}/ui/builds/live", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}
