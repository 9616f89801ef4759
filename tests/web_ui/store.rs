//! The store page: images and versions listed, a bundle uploaded through the file input with
//! its progress bar, hostile uploads refused with nothing kept, GC previewed then run, and
//! CSRF on every form.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bootfactory::fixture::{FixtureOptions, write_release};

use crate::auth::{admin_token, csrf_of, form, log_in, session_cookie};
use crate::support::browser::{self, Browser};
use crate::support::{TestServer, import_fixture};

/// A fixture release of `version` in namespace `ns`, as a `tar.gz` bundle in `dir`.
fn bundle(dir: &Path, ns: &str, version: &str) -> PathBuf {
    let layout = dir.join(format!("layout-{ns}"));
    let opts = FixtureOptions {
        versions: vec![version.into()],
        namespace: ns.into(),
        ..FixtureOptions::default()
    };
    write_release(&layout, &opts).unwrap();
    let out = dir.join(format!("{ns}.tar.gz"));
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-czf")
        .arg(&out)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// `GET /api/v1/images` with the admin token: the references held.
async fn references(s: &TestServer) -> Vec<String> {
    bootfactory::init_crypto();
    let list: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/images", s.url))
        .bearer_auth(admin_token(s))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut refs: Vec<String> = list["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect();
    refs.sort();
    refs
}

/// `GET /api/v1/store/usage`: the Talos versions the store holds.
async fn versions(s: &TestServer) -> Vec<String> {
    bootfactory::init_crypto();
    let usage: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/store/usage", s.url))
        .bearer_auth(admin_token(s))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    usage["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_string())
        .collect()
}

/// Scrolls the element matching `selector` to the top of the window (for a screenshot).
async fn scroll_to(b: &Browser, selector: &str) {
    b.client
        .execute(
            "document.querySelector(arguments[0]).scrollIntoView()",
            vec![serde_json::json!(selector)],
        )
        .await
        .unwrap();
}

/// A `multipart/form-data` body with `file` as the `bundle` part (and an empty `name`).
fn multipart(file: &[u8]) -> (String, Vec<u8>) {
    multipart_named("", file)
}

/// A `multipart/form-data` body: the `name` field, then `file` as the `bundle` part.
fn multipart_named(name: &str, file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----bootfactory-test-7d1c";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"b.tar.gz\"\r\n\
         Content-Type: application/gzip\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_uploaded_in_the_browser_is_listed_and_garbage_is_refused() {
    if !browser::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let good = bundle(tmp.path(), "siderolabs", "v1.11.6");
    let garbage = tmp.path().join("garbage.tar.gz");
    std::fs::write(
        &garbage,
        b"this is not a bundle, just some text\n".repeat(200),
    )
    .unwrap();

    let s = TestServer::start(&[]).await;
    let b = Browser::start().await;
    log_in(&b, &s, "/ui/store").await;
    assert_eq!(b.url().await.path(), "/ui/store");
    b.wait_for_text("The store holds no image").await;
    b.shot("store-empty").await;

    b.find("#upload-file")
        .await
        .send_keys(good.to_str().unwrap())
        .await
        .unwrap();
    b.find("#upload button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.find("#upload[data-state=ok]").await;
    b.wait_for_text("Done: ").await;
    // The bar ends full, and the refreshed list shows the new images.
    let bar = b
        .client
        .execute(
            "const p = document.getElementById('upload-progress'); return [p.value, p.max];",
            vec![],
        )
        .await
        .unwrap();
    let (value, max) = (bar[0].as_f64().unwrap(), bar[1].as_f64().unwrap());
    assert!(max > 0.0 && value == max, "progress {value} of {max}");
    let held = b.element_text("#held").await;
    let refs = references(&s).await;
    assert!(
        refs.iter().any(|r| r.starts_with("ghcr.io/siderolabs/")),
        "{refs:?}"
    );
    for r in &refs {
        assert!(held.contains(r.as_str()), "{r} not listed:\n{held}");
    }
    assert!(
        b.find("#versions")
            .await
            .text()
            .await
            .unwrap()
            .contains("v1.11.6"),
        "version listed"
    );
    scroll_to(&b, "section[aria-labelledby=upload-h]").await;
    b.shot("store-uploaded").await;

    // Garbage: refused with the server's message on the page, nothing added.
    b.find("#upload-file")
        .await
        .send_keys(garbage.to_str().unwrap())
        .await
        .unwrap();
    b.find("#upload button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.find("#upload[data-state=error]").await;
    b.wait_for_text("the body is not a bundle").await;
    scroll_to(&b, "section[aria-labelledby=upload-h]").await;
    b.shot("store-upload-refused").await;
    assert_eq!(references(&s).await, refs);

    // A truncated bundle starts like one: the import fails midway (its NDJSON ends in an
    // error), and nothing of it is kept.
    let truncated = tmp.path().join("truncated.tar.gz");
    let whole = std::fs::read(bundle(tmp.path(), "cut", "v1.11.6")).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    b.find("#upload-file")
        .await
        .send_keys(truncated.to_str().unwrap())
        .await
        .unwrap();
    b.find("#upload button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    // (The status still shows the garbage's refusal until this upload's own answer.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = b.element_text("#upload-status").await;
        if status.starts_with("Not imported") && !status.contains("not a bundle") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "status: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.contains("nothing of it was kept"), "{status}");
    assert_eq!(references(&s).await, refs);

    // The form without its script (`form.submit()` skips the submit handler): a plain
    // multipart post, answered with the store page and the import's result (here every blob
    // is already stored).
    b.find("#upload-file")
        .await
        .send_keys(good.to_str().unwrap())
        .await
        .unwrap();
    b.client
        .execute("document.getElementById('upload').submit()", vec![])
        .await
        .unwrap();
    b.find("#upload-result").await;
    let result = b.element_text("#upload-result").await;
    assert!(result.contains("Bundle imported"), "{result}");
    assert!(result.contains("0 blobs written"), "{result}");
    assert_eq!(b.url().await.path(), "/ui/store/upload");
    b.shot("store-upload-without-script").await;
    assert_eq!(references(&s).await, refs);

    // Without script the form posts and the answer is a page: a 400 page for garbage.
    let (client, cookie) = session_cookie(&s).await;
    let csrf = csrf_of(&s, &client, &cookie, "/ui/store").await;
    let (ct, body) = multipart(&std::fs::read(&garbage).unwrap());
    let r = client
        .post(format!("{}/ui/store/upload?csrf={csrf}", s.url))
        .header("cookie", &cookie)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("the body is not a bundle"), "{text}");
    assert!(text.contains("<html"), "an HTML page: {text}");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_without_script_import_and_hostile_ones_keep_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(bundle(tmp.path(), "plain", "v1.11.6")).unwrap();
    let s = TestServer::start(&[]).await;
    let (client, cookie) = session_cookie(&s).await;
    let csrf = csrf_of(&s, &client, &cookie, "/ui/store").await;
    let post = |body: (String, Vec<u8>), csrf: Option<&str>| {
        let url = match csrf {
            Some(t) => format!("{}/ui/store/upload?csrf={t}", s.url),
            None => format!("{}/ui/store/upload", s.url),
        };
        client
            .post(url)
            .header("cookie", &cookie)
            .header("content-type", body.0)
            .body(body.1)
            .send()
    };

    // No CSRF token: refused before anything is read.
    let r = post(multipart(&good), None).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(references(&s).await, Vec::<String>::new());

    // Truncated: the tar.gz ends halfway. A 400 page, and no image half-imported.
    let r = post(multipart(&good[..good.len() / 2]), Some(&csrf))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("nothing of it was kept"), "{text}");
    assert_eq!(references(&s).await, Vec::<String>::new());

    // Not a form at all.
    let r = client
        .post(format!("{}/ui/store/upload?csrf={csrf}", s.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-tar")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A repository name that is not one (`mirror import --name` checks the same).
    let r = post(multipart_named("Not A/Repo:tag", &good), Some(&csrf))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("invalid repository"));

    let r = post(multipart_named(&"a".repeat(5000), &good), Some(&csrf))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("longer than 1024 bytes"));

    // A field the form does not have.
    let (ct, body) = multipart(&good);
    let body = [
        b"------bootfactory-test-7d1c\r\nContent-Disposition: form-data; name=\"foo\"\r\n\r\nx\r\n"
            .as_slice(),
        &body,
    ]
    .concat();
    let r = post((ct, body), Some(&csrf)).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not a valid form"));

    // An empty file input (nothing chosen).
    let (ct, body) = multipart(b"");
    let body = String::from_utf8(body)
        .unwrap()
        .replace("filename=\"b.tar.gz\"", "filename=\"\"");
    let r = post((ct, body.into_bytes()), Some(&csrf)).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("no file was chosen"));

    // Announced as larger than one upload may be: 413 before the body is read.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let head = format!(
            "POST /ui/store/upload?csrf={csrf} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\
             Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n--x\r\n",
            s.addr,
            2u64 << 40
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer))
            .await
            .expect("answered")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }

    // The whole bundle: the answer is the page with the import's result and the images.
    let r = post(multipart(&good), Some(&csrf)).await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Bundle imported"), "{page}");
    let refs = references(&s).await;
    assert!(!refs.is_empty());
    for r in &refs {
        assert!(page.contains(r.as_str()), "{r} not on the page");
    }

    // Verify re-hashes what was imported: every blob matches. Not without the token.
    let verify = |body: String| {
        client
            .post(format!("{}/ui/store/verify", s.url))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(verify(String::new()).await.unwrap().status(), 403);
    let r = verify(form(&[("csrf", csrf.as_str())])).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("blobs match their digests"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_is_previewed_then_confirmed_and_removes_the_older_version() {
    let data = tempfile::tempdir().unwrap();
    // Both fixture versions: v1.8.4 and v1.11.6.
    import_fixture(data.path(), &FixtureOptions::default()).await;
    let s = TestServer::start_in(data, &[]).await;
    assert_eq!(versions(&s).await, ["v1.11.6", "v1.8.4"]);

    // A GC form posted without the CSRF token deletes nothing.
    let (client, cookie) = session_cookie(&s).await;
    let r = client
        .post(format!("{}/ui/store/gc", s.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("keep_versions", "1"), ("grace_hours", "0")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A bad knob is a 400 page naming it.
    let r = client
        .get(format!("{}/ui/store/gc?keep_versions=many", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("keep versions"));
    assert_eq!(versions(&s).await, ["v1.11.6", "v1.8.4"]);

    if !browser::available() {
        return;
    }
    let b = Browser::start().await;
    log_in(&b, &s, "/ui/store").await;
    b.wait_for_text("v1.8.4").await;
    b.shot("store").await;
    let keep = b.find("#gc-keep-versions").await;
    keep.clear().await.unwrap();
    keep.send_keys("1").await.unwrap();
    let grace = b.find("#gc-grace").await;
    grace.clear().await.unwrap();
    grace.send_keys("0").await.unwrap();
    b.find("#gc-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for_text("GC plan (dry run)").await;
    let plan = b.element_text("#gc-versions").await;
    let row = |text: &str, v: &str| {
        text.lines()
            .find(|l| l.starts_with(v))
            .unwrap_or_else(|| panic!("no row {v}:\n{text}"))
            .to_string()
    };
    assert!(row(&plan, "v1.8.4").contains("to remove"), "{plan}");
    assert!(row(&plan, "v1.11.6").contains("kept"), "{plan}");
    let summary = b.element_text("#gc-summary").await;
    assert!(!summary.contains("free 0 B"), "{summary}");
    b.shot("store-gc-plan").await;
    // The preview changed nothing.
    assert_eq!(versions(&s).await, ["v1.11.6", "v1.8.4"]);

    b.find("#gc-confirm button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for_text("GC done").await;
    let done = b.element_text("#gc-summary").await;
    assert!(done.contains("1 Talos version removed"), "{done}");
    b.shot("store-gc-done").await;
    assert_eq!(versions(&s).await, ["v1.11.6"]);
    b.goto(&format!("{}/ui/store", s.url)).await;
    let listed = b.element_text("#versions").await;
    assert!(
        listed.contains("v1.11.6") && !listed.contains("v1.8.4"),
        "{listed}"
    );
    b.close().await;

    // Narrow screens: the page still fits (tables scroll inside their frame).
    let b = Browser::start_sized(360, 800).await;
    log_in(&b, &s, "/ui/store").await;
    b.find("#held").await;
    b.shot("store-360").await;
    scroll_to(&b, "#versions").await;
    b.shot("store-360-lists").await;
    let overflow = b
        .client
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        serde_json::json!(false),
        "the page scrolls sideways"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_page_links_under_the_external_url_prefix() {
    let s = TestServer::start(&[("http.externalURL", "https://boot.example.org/factory/")]).await;
    let (client, cookie) = session_cookie(&s).await;
    let page = client
        .get(format!("{}/ui/store", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "action=\"/factory/ui/store/upload?csrf=",
        "action=\"/factory/ui/store/gc\"",
        "action=\"/factory/ui/store/verify\"",
        "src=\"/factory/ui/static/store.",
    ] {
        assert!(page.contains(needle), "{needle} missing:\n{page}");
    }
    assert!(
        !page.contains("boot.example.org"),
        "paths, not absolute URLs"
    );
}
