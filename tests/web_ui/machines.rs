//! The machines page: assigning, changing and unassigning a MAC and the default from the page
//! (checked by the admin API's own answers), errors shown next to the form with a 4xx, live
//! updates over Server-Sent Events while a machine boots, the wizard's preselection link, and
//! the event stream's bounds.

use std::time::{Duration, Instant};

use bootfactory::fixture::FixtureOptions;
use futures_util::StreamExt;
use serde_json::Value;

use crate::auth::{admin_token, csrf_of, form, log_in, session_cookie};
use crate::support::browser::{self, Browser};
use crate::support::{TestServer, import_fixture, post_schematic};

const MAC: &str = "52:54:00:aa:bb:01";

/// A server on a store holding the fixture release, offline, with one schematic (the empty
/// one) posted through the API. Returns the server, the schematic ID and the Talos version.
async fn server_with_fixture(extra: &[(&str, &str)]) -> (TestServer, String, String) {
    let data = tempfile::tempdir().unwrap();
    let (_layout, release) = import_fixture(data.path(), &FixtureOptions::default()).await;
    let version = release.versions[0].version.clone();
    let mut overrides = vec![("offline", "true")];
    overrides.extend_from_slice(extra);
    let s = TestServer::start_in(data, &overrides).await;
    let id = post_schematic(&s.url, "customization: {}\n").await;
    (s, id, version)
}

/// `GET /api/v1/machines` with the admin token.
async fn api_machines(s: &TestServer) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/machines", s.url))
        .bearer_auth(admin_token(s))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn machine<'a>(list: &'a Value, mac: &str) -> Option<&'a Value> {
    list["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mac"] == mac)
}

/// Replaces the text of the input `selector` with `value`.
async fn fill(b: &Browser, selector: &str, value: &str) {
    let e = b.find(selector).await;
    e.clear().await.unwrap();
    if !value.is_empty() {
        e.send_keys(value).await.unwrap();
    }
}

async fn value(b: &Browser, selector: &str) -> String {
    b.find(selector)
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn click(b: &Browser, selector: &str) {
    b.click(selector).await;
}

/// Waits up to 10 s for the URL's query to contain `needle`.
async fn wait_for_query(b: &Browser, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = b.url().await;
        if url.query().unwrap_or_default().contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "never reached ?{needle}: {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_is_assigned_changed_and_unassigned_from_the_page() {
    if !browser::available() {
        return;
    }
    let (s, id, version) = server_with_fixture(&[]).await;
    let b = Browser::start().await;
    log_in(&b, &s, "/ui/machines").await;
    b.wait_for_text("No machine has asked to boot yet").await;
    b.shot("machines-empty").await;

    // Assign.
    fill(&b, "#a-mac", MAC).await;
    fill(&b, "#a-schematic", &id).await;
    fill(&b, "#a-version", &version).await;
    click(&b, "#assign-form button[type=submit]").await;
    wait_for_query(&b, "assigned=").await;
    b.wait_for_text(&format!("{MAC} is assigned.")).await;
    let list = api_machines(&s).await;
    let m = machine(&list, MAC).expect("assigned machine in the API");
    assert_eq!(m["assignment"]["schematic"], id.as_str());
    assert_eq!(m["assignment"]["version"], version.as_str());
    assert_eq!(m["assignment"]["platform"], "metal");
    assert!(
        b.find(&format!("tr[data-mac=\"{MAC}\"]"))
            .await
            .text()
            .await
            .unwrap()
            .contains(&version)
    );

    // Change: the "Change" link prefills the form with the current assignment.
    click(&b, &format!("tr[data-mac=\"{MAC}\"] a")).await;
    assert_eq!(value(&b, "#a-mac").await, MAC);
    assert_eq!(value(&b, "#a-schematic").await, id);
    assert_eq!(value(&b, "#a-version").await, version);
    fill(
        &b,
        "#a-kernel-args",
        "console=ttyS0 talos.dashboard.disabled=1",
    )
    .await;
    fill(&b, "#a-labels", "role=worker").await;
    b.find("#a-arch option[value=amd64]")
        .await
        .click()
        .await
        .unwrap();
    click(&b, "#assign-form button[type=submit]").await;
    b.wait_for_text(&format!("{MAC} is assigned.")).await;
    b.wait_for_text("role=worker").await;
    let list = api_machines(&s).await;
    let a = &machine(&list, MAC).unwrap()["assignment"];
    assert_eq!(
        a["extraKernelArgs"],
        serde_json::json!(["console=ttyS0", "talos.dashboard.disabled=1"])
    );
    assert_eq!(a["labels"]["role"], "worker");
    assert_eq!(a["arch"], "amd64");
    b.shot("machines-assigned").await;

    // Errors are shown next to the form, with what was typed kept.
    // (After a success the form is empty again.)
    assert_eq!(value(&b, "#a-mac").await, "");
    fill(&b, "#a-mac", "not-a-mac").await;
    fill(&b, "#a-schematic", &id).await;
    fill(&b, "#a-version", &version).await;
    click(&b, "#assign-form button[type=submit]").await;
    b.element_text_with("#assign-error", "is not a MAC address")
        .await;
    assert_eq!(value(&b, "#a-mac").await, "not-a-mac");
    assert_eq!(value(&b, "#a-schematic").await, id);
    fill(&b, "#a-mac", "52:54:00:aa:bb:02").await;
    fill(&b, "#a-schematic", &"0".repeat(64)).await;
    click(&b, "#assign-form button[type=submit]").await;
    b.element_text_with("#assign-error", "not found").await;
    assert_eq!(value(&b, "#a-schematic").await, "0".repeat(64));
    b.shot("machines-error").await;
    assert!(machine(&api_machines(&s).await, "52:54:00:aa:bb:02").is_none());

    // Default: set, shown, cleared.
    fill(&b, "#d-schematic", &id).await;
    fill(&b, "#d-version", &version).await;
    click(&b, "#default-form button[type=submit]").await;
    b.wait_for_text("The default assignment is set.").await;
    assert_eq!(api_machines(&s).await["default"]["schematic"], id.as_str());
    click(&b, "#default-clear button").await;
    b.wait_for_text("The default assignment is cleared.").await;
    assert!(api_machines(&s).await.get("default").is_none());

    // Unassign.
    click(&b, &format!("button[aria-label=\"Unassign {MAC}\"]")).await;
    b.wait_for_text(&format!("{MAC} is no longer assigned."))
        .await;
    assert!(machine(&api_machines(&s).await, MAC).is_none());
    b.close().await;
}

/// The page's answers to refused forms carry the API's status (400, 409 naming the missing
/// piece, 404), never a 500 — and a form without the CSRF token changes nothing.
#[tokio::test]
async fn refused_forms_answer_the_apis_status_and_need_the_csrf_token() {
    let (s, id, version) = server_with_fixture(&[]).await;
    let broken = post_schematic(
        &s.url,
        "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/not-in-this-store\n",
    )
    .await;
    let (client, cookie) = session_cookie(&s).await;
    let csrf = csrf_of(&s, &client, &cookie, "/ui/machines").await;
    let post = |path: &'static str, pairs: Vec<(&'static str, String)>| {
        let client = client.clone();
        let cookie = cookie.clone();
        let url = format!("{}{path}", s.url);
        async move {
            let r = client
                .post(url)
                .header("cookie", cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&pairs))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let with = |mac: &str, schematic: &str, version: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("mac", mac.to_string()),
            ("schematic", schematic.to_string()),
            ("version", version.to_string()),
        ]
    };
    let cases = [
        (with("nope", &id, &version), 400, "is not a MAC address"),
        (with(MAC, &"0".repeat(64), &version), 400, "not found"),
        (with(MAC, "xyz", &version), 400, "is not a schematic ID"),
        (with(MAC, &id, "v9.9.9"), 400, "is not available"),
        (with(MAC, &broken, &version), 409, "not-in-this-store"),
    ];
    for (pairs, status, want) in cases {
        let (got, html) = post("/ui/machines/assign", pairs.clone()).await;
        assert_eq!(got, status, "{pairs:?}: {html}");
        assert!(html.contains(want), "{pairs:?}: {html}");
        assert!(html.contains("id=\"assign-error\""), "shown by the form");
    }
    let mut labels = with(MAC, &id, &version);
    labels.push(("labels", "no equals sign".to_string()));
    let (got, html) = post("/ui/machines/assign", labels).await;
    assert_eq!(got, 400);
    assert!(html.contains("is not key=value"), "{html}");
    assert!(machine(&api_machines(&s).await, MAC).is_none());
    // Unassigning what is not assigned, clearing a default that is not set: 404, as the API.
    let (got, _) = post(
        "/ui/machines/unassign",
        vec![("csrf", csrf.clone()), ("mac", MAC.to_string())],
    )
    .await;
    assert_eq!(got, 404);
    let (got, html) = post("/ui/machines/default/clear", vec![("csrf", csrf.clone())]).await;
    assert_eq!(got, 404);
    assert!(html.contains("no default assignment"), "{html}");
    // No CSRF token, or a wrong one: 403 and nothing stored.
    let mut no_token = with(MAC, &id, &version);
    no_token.remove(0);
    assert_eq!(post("/ui/machines/assign", no_token).await.0, 403);
    let mut wrong = with(MAC, &id, &version);
    wrong[0].1 = "wrong".into();
    assert_eq!(post("/ui/machines/assign", wrong).await.0, 403);
    assert!(machine(&api_machines(&s).await, MAC).is_none());
    // With it: stored, and a redirect back with a notice.
    let r = client
        .post(format!("{}/ui/machines/assign", s.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&with(MAC, &id, &version)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        format!("/ui/machines?assigned={MAC}#notice").as_str()
    );
    assert!(machine(&api_machines(&s).await, MAC).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booting_machine_appears_in_the_open_page_without_a_reload() {
    if !browser::available() {
        return;
    }
    let (s, id, version) = server_with_fixture(&[]).await;
    let b = Browser::start().await;
    log_in(&b, &s, "/ui/machines").await;
    // The page's script says when its event stream is live.
    b.find("#live:not([hidden])").await;
    let marker: Value = b
        .client
        .execute("window.notReloaded = true; return true", vec![])
        .await
        .unwrap();
    assert_eq!(marker, true);

    let booting = "52:54:00:00:00:77";
    let r = reqwest::get(format!("{}/boot/{booting}.ipxe?arch=amd64", s.url))
        .await
        .unwrap();
    assert!(
        r.status().is_success() || r.status() == 404,
        "{}",
        r.status()
    );
    b.wait_for_text(booting).await;
    // An assignment made elsewhere (the API) shows up too.
    let r = reqwest::Client::new()
        .put(format!("{}/api/v1/machines/{booting}", s.url))
        .bearer_auth(admin_token(&s))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"schematic":"{id}","version":"{version}","labels":{{"rack":"r7"}}}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    b.wait_for_text("rack=r7").await;
    let still: Value = b
        .client
        .execute("return window.notReloaded === true", vec![])
        .await
        .unwrap();
    assert_eq!(still, true, "the page was not reloaded");
    b.shot("machines-live").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wizard_link_preselects_and_the_page_fits_360_px() {
    if !browser::available() {
        return;
    }
    let (s, id, version) = server_with_fixture(&[]).await;
    // A machine with a long row, so the table is wider than the screen.
    reqwest::get(format!("{}/boot/{MAC}.ipxe", s.url))
        .await
        .unwrap();
    let b = Browser::start_sized(360, 800).await;
    log_in(
        &b,
        &s,
        &format!("/ui/machines%3Fschematic%3D{id}%26version%3D{version}"),
    )
    .await;
    assert_eq!(value(&b, "#a-schematic").await, id);
    assert_eq!(value(&b, "#a-version").await, version);
    assert_eq!(value(&b, "#a-mac").await, "");
    b.find(&format!("tr[data-mac=\"{MAC}\"]")).await;
    // The page itself does not scroll sideways; the table scrolls inside its .table-wrap.
    let widths: Value = b
        .client
        .execute(
            "const w = document.querySelector('.table-wrap'); \
             return [document.documentElement.scrollWidth, document.documentElement.clientWidth, \
                     w.scrollWidth, w.clientWidth]",
            vec![],
        )
        .await
        .unwrap();
    let w: Vec<u64> = serde_json::from_value(widths).unwrap();
    if w[0] > w[1] {
        let wide = b
            .client
            .execute(
                "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1 && !e.closest('.table-wrap')).slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).join(', ')",
                vec![],
            )
            .await
            .unwrap();
        b.shot("machines-360").await;
        panic!("the page scrolls sideways: {w:?}; too wide: {wide}");
    }
    assert!(w[0] <= w[1], "the page scrolls sideways: {w:?}");
    assert!(
        w[2] > w[3],
        "the table is wider than the screen and scrolls: {w:?}"
    );
    b.shot("machines-360").await;
    // A refusal at this width: the message wraps inside the page.
    fill(&b, "#a-mac", "not-a-mac-address-at-all").await;
    click(&b, "#assign-form button[type=submit]").await;
    b.find("#assign-error").await;
    let overflow: Value = b
        .client
        .execute(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, true, "the error widens the page");
    b.shot("machines-360-error").await;
    b.close().await;
}

/// Reads one SSE event name (`event: …`) from a stream, skipping keep-alive comments.
async fn next_event(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
) -> Option<String> {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if let Some(name) = block.lines().find_map(|l| l.strip_prefix("event: ")) {
                return Some(name.to_string());
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an event within 10 s")?
            .ok()?;
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn the_event_stream_needs_a_session_is_bounded_and_ends_at_shutdown() {
    let (s, _, _) = server_with_fixture(&[("http.shutdownGraceSeconds", "30")]).await;
    let (client, cookie) = session_cookie(&s).await;
    let url = format!("{}/ui/machines/events", s.url);
    // No session: the login page.
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let open = || async {
        client
            .get(&url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
    };
    let first = open().await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let mut body = first.bytes_stream();
    let mut buf = String::new();
    assert_eq!(
        next_event(&mut body, &mut buf).await.as_deref(),
        Some("ready")
    );
    // A machine asking to boot is a change.
    reqwest::get(format!("{}/boot/{MAC}.ipxe", s.url))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut body, &mut buf).await.as_deref(),
        Some("change")
    );
    // At most four streams per session.
    let mut more = Vec::new();
    for _ in 0..3 {
        let r = open().await;
        assert_eq!(r.status(), 200);
        more.push(r);
    }
    let refused = open().await;
    assert_eq!(refused.status(), 429);
    // Closing one frees its place.
    drop(more.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = open().await;
        if r.status() == 200 {
            more.push(r);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Shutdown ends the open streams instead of waiting out the 30 s grace period.
    let started = Instant::now();
    let stopping = tokio::spawn(s.stop());
    loop {
        match tokio::time::timeout(Duration::from_secs(10), body.next()).await {
            Ok(Some(Ok(_))) => continue,
            Ok(_) => break,
            Err(_) => panic!("the stream did not end at shutdown"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(more);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stopped well before the grace period")
        .unwrap();
}

#[tokio::test]
async fn the_event_stream_ends_when_its_session_does() {
    let (s, _, _) = server_with_fixture(&[]).await;
    let (client, cookie) = session_cookie(&s).await;
    let csrf = csrf_of(&s, &client, &cookie, "/ui/machines").await;
    let r = client
        .get(format!("{}/ui/machines/events", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut buf = String::new();
    assert_eq!(
        next_event(&mut body, &mut buf).await.as_deref(),
        Some("ready")
    );
    let r = client
        .post(format!("{}/ui/logout", s.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", csrf)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // The next change finds the session gone: the stream ends instead of sending it.
    reqwest::get(format!("{}/boot/{MAC}.ipxe", s.url))
        .await
        .unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        seen
    })
    .await
    .expect("the stream ended");
    assert!(!rest.contains("event: change"), "{rest}");
}
