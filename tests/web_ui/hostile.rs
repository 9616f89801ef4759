//! The UI attacked: by a stranger on the LAN (no session) and by a hostile web page open in
//! an admin's browser (cross-site requests that carry the admin's cookie but not the CSRF
//! token). Every answer to bad input is a 4xx page, never a 500, a panic or a leak.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::{admin_token, form, session_cookie};
use crate::support::TestServer;

/// Sends `request` (raw bytes) and returns the status code and the whole answer.
async fn raw(s: &TestServer, request: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("send");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The CSRF token of the session `cookie`, from an admin page's form.
async fn csrf_of(s: &TestServer, client: &reqwest::Client, cookie: &str) -> String {
    let page = client
        .get(format!("{}/ui/store", s.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = page.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    page[at..at + 64].to_string()
}

/// The default assignment as the API shows it (`null` when none).
async fn has_default(s: &TestServer, client: &reqwest::Client) -> bool {
    let r = client
        .get(format!("{}/api/v1/default", s.url))
        .bearer_auth(admin_token(s))
        .send()
        .await
        .unwrap();
    r.status() == 200
}

#[tokio::test]
async fn cross_site_posts_of_any_content_type_are_refused() {
    let s = TestServer::start(&[]).await;
    let (client, cookie) = session_cookie(&s).await;
    let csrf = csrf_of(&s, &client, &cookie).await;
    let url = format!("{}/ui/logout", s.url);
    let boundary = "xxBOUNDARYxx";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}--\r\n"
    );
    // What a hostile page can send without a preflight: urlencoded without the field,
    // text/plain and multipart carrying the token as a body field (the middleware reads it
    // only from urlencoded forms, the header or the query), odd casing of the type.
    let attempts: Vec<(&str, String)> = vec![
        ("text/plain", format!("csrf={csrf}")),
        (
            &*Box::leak(format!("multipart/form-data; boundary={boundary}").into_boxed_str()),
            multipart.clone(),
        ),
        ("application/x-www-form-urlencoded", "a=b".into()),
        ("APPLICATION/X-WWW-FORM-URLENCODED", "csrf=wrong".into()),
        (
            "application/json",
            format!("{{\"csrf\":\"{}\"}}", "x".repeat(64)),
        ),
        ("", String::new()),
    ];
    for (ct, body) in attempts {
        let mut r = client.post(&url).header("cookie", &cookie);
        if !ct.is_empty() {
            r = r.header("content-type", ct);
        }
        let r = r.body(body).send().await.unwrap();
        assert_eq!(r.status(), 403, "{ct}");
    }
    // A wrong token in the query or header is refused even with the right one in the form.
    let r = client
        .post(format!("{url}?csrf=wrong"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", &csrf)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Method override does not exist: GET/HEAD of a POST route changes nothing.
    for m in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let r = client
            .request(m.clone(), format!("{url}?_method=POST&csrf={csrf}"))
            .header("cookie", &cookie)
            .header("x-http-method-override", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{m}");
    }
    // The session survived all of it.
    let r = client
        .get(format!("{}/ui/machines", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!has_default(&s, &client).await);
}

#[tokio::test]
async fn login_redirects_stay_on_the_site() {
    let s = TestServer::start(&[]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for next in [
        "//evil.example/",
        "/\\evil.example",
        "https://evil.example/",
        "/\t/evil.example",
        "/%2F%2Fevil.example",
        "javascript:alert(1)",
        "/ui/machines\r\nSet-Cookie: a=b",
    ] {
        let page = client
            .get(format!("{}/ui/login", s.url))
            .query(&[("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{next}");
        let nonce = page
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("bootfactory_login="))
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_string();
        let r = client
            .post(format!("{}/ui/login", s.url))
            .header("cookie", format!("bootfactory_login={nonce}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("token", admin_token(&s)),
                ("csrf", nonce),
                ("next", next.to_string()),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{next}");
        let location = r.headers()["location"].to_str().unwrap();
        let parsed = url::Url::parse(&s.url).unwrap().join(location).unwrap();
        assert_eq!(parsed.host_str(), Some("127.0.0.1"), "{next} → {location}");
        assert!(
            r.headers()
                .get_all("set-cookie")
                .iter()
                .all(|c| !c.to_str().unwrap().starts_with("a="))
        );
    }
}

#[tokio::test]
async fn hostile_wizard_queries_are_client_errors() {
    let s = TestServer::start(&[("offline", "true")]).await;
    let many = "extensions=siderolabs%2Fiscsi-tools&".repeat(1500);
    let huge = format!("version={}", "1".repeat(70 * 1024));
    for q in [
        "version=%00",
        "target=%FF%FE%FD",
        "version=v1.%C0%AF",
        "target=metal&version=v99.99.99",
        "target=metal&version=v1.9.0&arch=%00",
        "target=metal&target=cloud&target=sbc",
        "schematic-id=%00%00",
        "schematic-id=..%2F..%2Fetc%2Fpasswd",
        "%=%&&==&",
        many.as_str(),
        huge.as_str(),
    ] {
        let (status, text) = raw(
            &s,
            format!("GET /?{q} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            (200..500).contains(&status),
            "{}: {status} {}",
            &q[..q.len().min(80)],
            &text[..text.len().min(400)]
        );
        assert!(!text.contains("<script>"), "{q}");
    }
}

#[tokio::test]
async fn hostile_login_and_wizard_bodies_are_client_errors() {
    let s = TestServer::start(&[]).await;
    let big = "a".repeat(3 << 20);
    for (path, ct, body) in [
        (
            "/ui/login",
            "application/x-www-form-urlencoded",
            b"token=%FF%FE&csrf=%00".to_vec(),
        ),
        (
            "/ui/login",
            "application/x-www-form-urlencoded",
            vec![0xff, 0xfe, b'=', 0x00],
        ),
        ("/ui/login", "text/plain", b"token=x".to_vec()),
        (
            "/ui/login",
            "application/x-www-form-urlencoded",
            big.as_bytes().to_vec(),
        ),
        (
            "/ui/wizard",
            "application/x-www-form-urlencoded",
            vec![0xff, 0xfe, b'=', 0x00],
        ),
        (
            "/ui/wizard",
            "application/x-www-form-urlencoded",
            big.as_bytes().to_vec(),
        ),
        (
            "/ui/wizard",
            "multipart/form-data; boundary=x",
            b"--x\r\n".to_vec(),
        ),
    ] {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let (status, text) = raw(&s, &request).await;
        assert!(
            (400..500).contains(&status),
            "{path} {ct}: {status} {}",
            &text[..text.len().min(400)]
        );
    }
}

#[tokio::test]
async fn uploads_without_a_session_or_token_are_refused_before_the_body() {
    let s = TestServer::start(&[]).await;
    let (client, cookie) = session_cookie(&s).await;
    // A multipart upload with the token only as a body field (what a cross-site form can
    // send): refused, without reading an unbounded body.
    let (status, _) = raw(
        &s,
        format!(
            "POST /ui/store/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {cookie}\r\n\
             Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status, 403);
    // With the token, hostile multipart is a 4xx: a huge part header, thousands of parts,
    // no closing boundary.
    let csrf = csrf_of(&s, &client, &cookie).await;
    let huge_header = format!(
        "--b\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"{}\"\r\n\r\nxx\r\n--b--\r\n",
        "a".repeat(2 << 20)
    );
    let many_parts = "--b\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx\r\n"
        .repeat(5000)
        + "--b--\r\n";
    let unterminated = "--b\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"a\"\r\n\r\nnot a bundle".to_string();
    for body in [huge_header, many_parts, unterminated] {
        let r = client
            .post(format!("{}/ui/store/upload?csrf={csrf}", s.url))
            .header("cookie", &cookie)
            .header("content-type", "multipart/form-data; boundary=b")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
}

#[tokio::test]
async fn public_pages_leak_no_admin_data() {
    let s = TestServer::start(&[]).await;
    let token = admin_token(&s);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A machine in the inventory, and an assignment for it.
    let r = client
        .get(format!("{}/boot/02-00-00-00-00-42.ipxe", s.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error() || r.status().is_success());
    let r = client
        .get(format!("{}/api/v1/machines", s.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(
        r.text().await.unwrap().contains("02:00:00:00:00:42"),
        "recorded"
    );
    for path in [
        "/",
        "/ui/login",
        "/ui/machines",
        "/ui/machines?fragment=table",
        "/ui/machines/events",
        "/ui/store",
        "/ui/store/gc",
        "/ui/builds",
        "/ui/builds/live?cached=1",
        "/ui/nope",
    ] {
        let r = client.get(format!("{}{path}", s.url)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(!text.contains(&token), "{path} shows the admin token");
        assert!(
            !text.contains("02:00:00:00:00:42"),
            "{path} shows the inventory"
        );
        assert!(status < 500, "{path}: {status}");
    }
}

#[tokio::test]
async fn hostile_admin_forms_are_client_errors_not_500s() {
    let s = TestServer::start(&[("offline", "true")]).await;
    let (client, cookie) = session_cookie(&s).await;
    let csrf = csrf_of(&s, &client, &cookie).await;
    let long = "x".repeat(300 * 1024);
    let nul = "\u{0}";
    let gets = [
        "/ui/machines?mac=%00&schematic=%FF&version=%00".to_string(),
        format!("/ui/machines?schematic={}", "a".repeat(40 * 1024)),
        "/ui/machines?assigned=zz&unassigned=%00&default=%FF".to_string(),
        "/ui/store/gc?keep_versions=-1&max_size=99999999999999999999T&grace_hours=%00".to_string(),
        "/ui/store/gc?keep_versions=18446744073709551616&grace_hours=99999999999999".to_string(),
        "/ui/store/gc?max_size=1e400&keep_referenced=%FF".to_string(),
        format!(
            "/ui/builds?schematic={}&version=%00&boot=%FF",
            "f".repeat(40 * 1024)
        ),
        "/ui/builds?schematic=..%2F..&version=v999.0.0&platform=%3Cscript%3E".to_string(),
        "/ui/builds/live?cached=%00".to_string(),
    ];
    for path in gets {
        let r = client
            .get(format!("{}{path}", s.url))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(
            status.as_u16() < 500,
            "{}: {status}",
            &path[..path.len().min(100)]
        );
        assert!(
            !text.contains("<script>"),
            "{}",
            &path[..path.len().min(100)]
        );
    }
    let posts: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("/ui/machines/assign", vec![("mac", nul.into())]),
        (
            "/ui/machines/assign",
            vec![
                ("mac", "02:00:00:00:00:01".into()),
                ("schematic", "<script>".into()),
                ("version", "v1.11.6".into()),
                ("kernel_args", "a ".repeat(100_000)),
                ("labels", "k=v\n".repeat(50_000)),
            ],
        ),
        (
            "/ui/machines/assign",
            vec![
                ("mac", "02:00:00:00:00:01".into()),
                ("schematic", "a".repeat(64)),
                ("version", nul.into()),
                ("labels", format!("{long}=1")),
                ("arch", "%FF".into()),
            ],
        ),
        ("/ui/machines/unassign", vec![("mac", long.clone())]),
        (
            "/ui/machines/default",
            vec![("schematic", long.clone()), ("version", nul.into())],
        ),
        ("/ui/machines/default/clear", vec![]),
        (
            "/ui/builds/warm",
            vec![
                ("schematic", "../../etc".into()),
                ("version", "v1.11.6".into()),
                ("boot", "<img>".into()),
                ("arch", nul.into()),
            ],
        ),
        (
            "/ui/builds/warm",
            vec![("schematic", long.clone()), ("version", long.clone())],
        ),
        (
            "/ui/store/gc",
            vec![
                ("keep_versions", "-5".into()),
                ("max_size", "12QB".into()),
                ("grace_hours", "1e9".into()),
            ],
        ),
    ];
    for (path, fields) in posts {
        let mut fields = fields;
        fields.push(("csrf", csrf.clone()));
        let r = client
            .post(format!("{}{path}", s.url))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&fields))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(
            status.as_u16() < 500,
            "{path}: {status} {}",
            &text[..text.len().min(300)]
        );
        assert!(
            !text.contains("<script>") && !text.contains("<img>"),
            "{path}"
        );
    }
    // Invalid UTF-8 in an admin form: a 4xx.
    let mut body = b"mac=".to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(format!("&csrf={csrf}").as_bytes());
    let r = client
        .post(format!("{}/ui/machines/unassign", s.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
}

#[tokio::test]
async fn a_tossed_session_cookie_does_not_shadow_the_real_one() {
    // Cookies ignore ports, and a sibling host may set them for the parent domain: another
    // page of the same site can plant `bootfactory_session=…` with a longer path, which the
    // browser then sends first. The real session still counts.
    let s = TestServer::start(&[]).await;
    let (client, cookie) = session_cookie(&s).await;
    let r = client
        .get(format!("{}/ui/machines", s.url))
        .header("cookie", format!("bootfactory_session=planted; {cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Nor does a planted value open anything on its own.
    let r = client
        .get(format!("{}/ui/machines", s.url))
        .header(
            "cookie",
            "bootfactory_session=planted; bootfactory_session=",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}
