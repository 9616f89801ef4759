//! The public Image Factory wizard (`/`): walked in Chromium against a server holding the
//! fixture release (Talos 1.8.4 and 1.11.6 with ten extensions), upstream's deep links, links
//! under a sub-path `http.externalURL`, and the same steps without JavaScript (plain GETs).

use fantoccini::Locator;

use crate::support::browser::{self, Browser};
use crate::support::{TestServer, tools};

use crate::fixture_server as server;

fn client() -> reqwest::Client {
    bootfactory::init_crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `POST /schematics` of `yaml`: the API's ID and canonical YAML.
async fn api_schematic(url: &str, yaml: &str) -> (String, String) {
    let r = client()
        .post(format!("{url}/schematics"))
        .body(yaml.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let json: serde_json::Value = r.json().await.unwrap();
    (
        json["id"].as_str().unwrap().to_string(),
        json["schematic"].as_str().unwrap().to_string(),
    )
}

async fn click(b: &Browser, selector: &str) {
    b.find(selector).await.click().await.unwrap();
}

/// Every `href` of the page, as written and as the browser resolves it.
async fn hrefs(b: &Browser) -> Vec<(String, String)> {
    let v = b
        .client
        .execute(
            "return Array.from(document.querySelectorAll('a[href]')).map(a => [a.getAttribute('href'), a.href])",
            vec![],
        )
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_string(),
                pair[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Whether the page is wider than the window (horizontal scrolling at 360 px).
async fn overflows(b: &Browser) -> bool {
    b.client
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth",
            vec![],
        )
        .await
        .unwrap()
        .as_bool()
        .unwrap()
}

async fn visible(b: &Browser, selector: &str) -> bool {
    b.client
        .find(Locator::Css(selector))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metal_with_two_extensions_and_kernel_args_gets_the_apis_id() {
    if !browser::available() {
        return;
    }
    let s = server(&[]).await;
    let b = Browser::start().await;
    b.goto(&format!("{}/", s.url)).await;
    // Hardware type: metal preselected.
    let metal = b.find("input[name=target][value=metal]").await;
    assert_eq!(
        metal.prop("checked").await.unwrap().as_deref(),
        Some("true")
    );
    b.shot("wizard-1-target").await;
    click(&b, "#wizard-next").await;
    // Version: the latest stable the store holds is preselected.
    let version = b.find("select#version").await;
    assert_eq!(
        version.prop("value").await.unwrap().as_deref(),
        Some("1.11.6")
    );
    b.wait_for_text("1.8.4").await;
    b.shot("wizard-2-version").await;
    click(&b, "#wizard-next").await;
    // Architecture.
    b.find("input[name=arch][value=amd64]").await;
    b.shot("wizard-3-arch").await;
    click(&b, "#wizard-next").await;
    // Extensions: the live search hides what does not match, keeps what is selected.
    let search = b.find("#ext-search").await;
    assert!(b.url().await.query().unwrap().contains("arch=amd64"));
    search.send_keys("gvisor").await.unwrap();
    b.find("input[name=extensions][value='siderolabs/gvisor']")
        .await
        .click()
        .await
        .unwrap();
    assert!(
        !visible(&b, "label[data-search*='intel-ucode']").await,
        "the filter hides non-matching extensions"
    );
    search.clear().await.unwrap();
    search.send_keys("MICROCODE").await.unwrap();
    assert!(
        visible(&b, "label[data-search*='gvisor']").await,
        "selected stays"
    );
    assert!(visible(&b, "label[data-search*='amd-ucode']").await);
    assert!(!visible(&b, "label[data-search*='tailscale']").await);
    b.find("input[name=extensions][value='siderolabs/intel-ucode']")
        .await
        .click()
        .await
        .unwrap();
    b.shot("wizard-4-extensions").await;
    click(&b, "#wizard-next").await;
    // Customization: extra kernel arguments (no embedded config or bootloader before 1.12).
    let cmdline = b.find("#cmdline").await;
    let query = b.url().await.query().unwrap_or_default().to_string();
    assert!(
        !query.contains("search="),
        "the search text stays out of the URL: {query}"
    );
    assert!(query.contains("extensions=siderolabs%2Fgvisor"), "{query}");
    assert!(!b.has("#embedded-config").await);
    assert!(!b.has("input[name=bootloader]").await);
    cmdline
        .send_keys("console=ttyS0 net.ifnames=0")
        .await
        .unwrap();
    b.shot("wizard-5-customization").await;
    click(&b, "#wizard-next").await;
    // Schematic ready: the ID is the API's for the same YAML.
    let shown = b.element_text("#schematic-id").await;
    let yaml = "customization:\n    extraKernelArgs:\n        - console=ttyS0\n        - net.ifnames=0\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/gvisor\n            - siderolabs/intel-ucode\n";
    let (id, canonical) = api_schematic(&s.url, yaml).await;
    assert_eq!(shown.trim(), id);
    let page_yaml = b.element_text("#schematic-yaml").await;
    assert_eq!(page_yaml.trim(), canonical.trim());
    let url = b.url().await;
    assert!(
        url.query().unwrap().contains(&format!("schematic-id={id}")),
        "{url}"
    );
    b.shot("wizard-6-final").await;
    let links = hrefs(&b).await;
    let base = format!("{}/image/{id}/v1.11.6/", s.url);
    for name in [
        "metal-amd64.iso",
        "metal-amd64.raw.zst",
        "metal-amd64.qcow2",
        "kernel-amd64",
        "cmdline-metal-amd64",
        "initramfs-amd64.xz",
        "metal-amd64-uki.efi",
    ] {
        let want = format!("{base}{name}");
        assert!(
            links.iter().any(|(raw, _)| *raw == want),
            "{want}: {links:?}"
        );
    }
    assert!(
        links
            .iter()
            .any(|(raw, _)| raw == &format!("/ui/machines?schematic={id}&version=v1.11.6")),
        "{links:?}"
    );
    // The links work: the command line carries the extra arguments.
    let r = client()
        .get(format!("{base}cmdline-metal-amd64"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = r.text().await.unwrap();
    assert!(
        line.contains("console=ttyS0") && line.contains("net.ifnames=0"),
        "{line}"
    );
    let kernel = client()
        .head(format!("{base}kernel-amd64"))
        .send()
        .await
        .unwrap();
    assert_eq!(kernel.status(), 200);
    let text = b.text().await;
    assert!(
        text.contains(&format!("{}/metal-installer/{id}:v1.11.6", s.addr)),
        "{text}"
    );
    assert!(text.contains(&format!("{}/pxe/{id}/v1.11.6/metal-amd64", s.url)));
    assert!(text.contains("talosctl-linux-amd64"), "{text}");
    // Back re-opens the customization step with this schematic's arguments.
    click(&b, "#wizard-back").await;
    let again = b.find("#cmdline").await;
    assert_eq!(
        again.prop("value").await.unwrap().as_deref(),
        Some("console=ttyS0 net.ifnames=0")
    );
    b.close().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_deep_link_lands_on_the_same_step() {
    if !browser::available() {
        return;
    }
    let s = server(&[]).await;
    let b = Browser::start().await;
    // §8's real-world link has no version: the version step, everything else kept.
    let link = "/?arch=amd64&cmdline-set=true&extensions=-&extensions=siderolabs%2Fqemu-guest-agent&platform=metal&target=metal";
    b.goto(&format!("{}{link}", s.url)).await;
    b.find("select#version").await;
    let current = b
        .find(".steps [aria-current=step]")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(current, "Talos Linux version");
    click(&b, "#wizard-next").await;
    let shown = b.element_text("#schematic-id").await;
    // The famous qemu-guest-agent schematic of factory.talos.dev.
    let qemu = "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515";
    assert_eq!(shown.trim(), qemu);
    b.shot("wizard-deep-link-final").await;
    // With a version the link is the final page at once.
    b.goto(&format!("{}{link}&version=1.11.6", s.url)).await;
    assert_eq!(b.element_text("#schematic-id").await.trim(), qemu);
    // A version this bootfactory does not have: the version step says so.
    b.goto(&format!("{}{link}&version=1.9.0", s.url)).await;
    b.find("select#version").await;
    b.wait_for_text("Talos 1.9.0 is not available on this bootfactory")
        .await;
    b.close().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_under_a_sub_path_never_repeat_the_host() {
    if !browser::available() {
        return;
    }
    let port = tools::free_port();
    let listen = format!("127.0.0.1:{port}");
    let external = format!("http://127.0.0.1:{port}/factory/");
    // The later `http.listen` wins over `server`'s own.
    let s = server(&[("http.listen", &listen), ("http.externalURL", &external)]).await;
    let b = Browser::start().await;
    // No reverse proxy here (so no styles either: the page's own files are under `/factory/`
    // too): the page is asked for at `/`, its links must name `/factory/`.
    let final_page = "/?arch=amd64&cmdline-set=true&extensions=-&extensions=siderolabs%2Fgvisor&platform=metal&target=metal&version=1.11.6";
    b.goto(&format!("{}{final_page}", s.url)).await;
    let id = b.element_text("#schematic-id").await;
    let id = id.trim();
    let links = hrefs(&b).await;
    let assets: Vec<&(String, String)> = links
        .iter()
        .filter(|(raw, _)| raw.contains("/image/"))
        .collect();
    assert!(assets.len() >= 7, "{links:?}");
    for (raw, _) in &assets {
        assert!(
            raw.starts_with(&format!(
                "http://127.0.0.1:{port}/factory/image/{id}/v1.11.6/"
            )),
            "{raw}"
        );
    }
    for (raw, resolved) in &links {
        assert_eq!(
            resolved.matches("127.0.0.1").count(),
            1,
            "{raw} → {resolved}"
        );
        assert!(
            raw.starts_with("/factory/") || raw.starts_with(&external) || raw == "#main",
            "a link outside the site's prefix: {raw}"
        );
    }
    let text = b.text().await;
    assert!(
        text.contains(&format!("127.0.0.1:{port}/metal-installer/{id}:v1.11.6")),
        "{text}"
    );
    b.close().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_fit_a_360px_screen() {
    if !browser::available() {
        return;
    }
    let s = server(&[]).await;
    let b = Browser::start_sized(360, 800).await;
    for (name, path, ready) in [
        ("wizard-360-target", "/".to_string(), "input[name=target]"),
        (
            "wizard-360-cloud",
            "/?target=cloud&version=1.11.6".to_string(),
            "input[name=platform]",
        ),
        (
            "wizard-360-extensions",
            "/?arch=amd64&platform=metal&target=metal&version=1.11.6".to_string(),
            "#ext-search",
        ),
        (
            "wizard-360-final",
            "/?arch=amd64&cmdline-set=true&cmdline=console%3DttyS0&extensions=-&extensions=siderolabs%2Fgvisor&platform=metal&target=metal&version=1.11.6".to_string(),
            "#schematic-id",
        ),
    ] {
        b.goto(&format!("{}{path}", s.url)).await;
        b.find(ready).await;
        b.shot(name).await;
        assert!(!overflows(&b).await, "{name} scrolls sideways at 360 px");
    }
    b.close().await;
    s.stop().await;
}

/// Without JavaScript: every step is a GET of its URL; the search is a GET too; the
/// customization form posts and redirects; hostile input gets a 400 page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_works_with_plain_requests() {
    let s = server(&[]).await;
    let get = |path: String| {
        let url = format!("{}{path}", s.url);
        async move {
            let r = client().get(url).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let (status, body) = get("/".into()).await;
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"name="target" value="metal" checked"#),
        "{body}"
    );
    let (_, body) = get("/?target=cloud&version=1.11.6".into()).await;
    assert!(body.contains(r#"value="aws" checked"#));
    assert!(
        body.contains(r#"value="cloudstack""#),
        "1.8.0-alpha.2 ≤ 1.11.6"
    );
    assert!(
        !body.contains(r#"value="alibabacloud""#),
        "needs 1.14.0-beta.2"
    );
    let (_, body) = get("/?target=cloud&version=1.11.6&platform=hcloud".into()).await;
    assert!(
        body.contains("id=\"ext-search\""),
        "hcloud is amd64 only: no arch step"
    );
    let (_, body) = get("/?target=sbc".into()).await;
    assert!(body.contains(r#"value="1.11.6""#) && body.contains(r#"value="1.8.4""#));
    let base = "/?target=metal&version=1.11.6&arch=amd64";
    let (_, body) = get(format!("{base}&extensions=-&op=search&search=gvisor")).await;
    assert!(body.contains(r#"value="siderolabs/gvisor""#));
    assert!(!body.contains(r#"value="siderolabs/intel-ucode""#));
    let (_, body) = get(format!(
        "{base}&extensions=-&extensions=siderolabs%2Ftailscale&op=search&search=gvisor"
    ))
    .await;
    assert!(
        body.contains(r#"value="siderolabs/tailscale" checked"#),
        "selected stays listed: {body}"
    );
    // SecureBoot is not served here: the arch step says so instead of offering it, and a
    // deep link asking for it gets the plain assets and the reason, never a -secureboot link.
    let (_, body) = get("/?target=metal&version=1.11.6".into()).await;
    assert!(body.contains("id=\"secureboot-note\""), "{body}");
    assert!(!body.contains("name=\"secureboot\""));
    let (status, body) = get(format!(
        "{base}&secureboot=true&extensions=-&cmdline-set=true"
    ))
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("SecureBoot assets are not served"), "{body}");
    assert!(!body.contains("-secureboot"), "{body}");
    // A board: upstream's default rpi_generic ID; its disk image is named, not linked.
    let (status, body) =
        get("/?target=sbc&version=1.11.6&board=rpi_generic&extensions=-&cmdline-set=true".into())
            .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9"),
        "{body}"
    );
    assert!(body.contains("not built by this"), "{body}");
    assert!(
        !body.contains("metal-arm64.raw.xz\""),
        "no link to it: {body}"
    );
    // The customization form: POST, then 303 to the final page of the stored schematic.
    let form = "target=metal&platform=metal&version=1.11.6&arch=amd64&extensions=-&extensions=siderolabs%2Fgvisor&cmdline=quiet&cmdline-set=true";
    let r = client()
        .post(format!("{}/ui/wizard", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let (id, _) = api_schematic(
        &s.url,
        "customization:\n    extraKernelArgs:\n        - quiet\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/gvisor\n",
    )
    .await;
    assert!(location.starts_with("/?"), "{location}");
    assert!(
        location.contains(&format!("schematic-id={id}")),
        "{location}"
    );
    let (status, body) = get(location.clone()).await;
    assert_eq!(status, 200);
    assert!(body.contains(&id));
    // An embedded configuration on 1.11: the form again, 400, with the reason and the input.
    let r = client()
        .post(format!("{}/ui/wizard", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("{form}&embedded-config=machine%3A+%7B%7D"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("needs Talos 1.12 or later"), "{body}");
    assert!(body.contains(r#"value="quiet""#), "{body}");
    // Hostile or wrong input: 400/404 pages, never a 500.
    for (path, status, needle) in [
        (
            "/?embedded-config=secret".to_string(),
            400,
            "never goes into a URL",
        ),
        ("/?target=mainframe".to_string(), 400, "unknown target"),
        (
            format!("{base}&schematic-id={}", "0".repeat(64)),
            404,
            "not stored",
        ),
        (format!("/?cmdline={}", "a".repeat(9000)), 400, "at most"),
        (format!("/?{}", "x=1&".repeat(1100)), 400, "parameters"),
    ] {
        let (got, body) = get(path.clone()).await;
        assert_eq!(got, status, "{}: {body}", &path[..path.len().min(80)]);
        assert!(body.contains(needle), "{body}");
        assert!(body.contains("<html"), "an HTML error page");
    }
    s.stop().await;
}

/// Offline with nothing imported: the first steps say so and show the import command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_offline_store_says_how_to_import() {
    let s = TestServer::start(&[("offline", "true")]).await;
    for path in ["/", "/?target=metal"] {
        let r = client()
            .get(format!("{}{path}", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains("id=\"nothing-imported\""), "{path}: {body}");
        assert!(
            body.contains("bootfactory mirror import &lt;bundle&gt;")
                || body.contains("bootfactory mirror import &#60;bundle&#62;"),
            "{path}: {body}"
        );
    }
    let r = client()
        .get(format!("{}/?target=metal", s.url))
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("id=\"wizard-next\""),
        "nothing to choose: {body}"
    );
    s.stop().await;
}

/// Online with the upstream registry refusing connections and nothing imported: the version
/// step says why in words and what to do, rather than an error page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_explained_on_the_version_step() {
    bootfactory::init_crypto();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let registries = format!("{{ghcr.io: {{endpoint: 'http://{addr}'}}}}");
    let s = TestServer::start(&[
        ("upstream.registries", &registries),
        ("upstream.retries", "0"),
    ])
    .await;
    let r = reqwest::get(format!("{}/?target=metal", s.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains(&format!("connection refused by {addr}")),
        "{html}"
    );
    assert!(html.contains("bootfactory mirror import"), "{html}");
}
