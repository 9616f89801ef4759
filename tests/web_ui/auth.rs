//! Logging in and out, sessions and CSRF.

use crate::support::TestServer;
use crate::support::browser::{self, Browser};

/// The admin token of a test server.
pub fn admin_token(s: &TestServer) -> String {
    std::fs::read_to_string(s.data_path("admin-token"))
        .expect("admin-token")
        .trim()
        .to_string()
}

/// Logs `b` in on `s` through the login form (landing on `next`).
pub async fn log_in(b: &Browser, s: &TestServer, next: &str) {
    b.goto(&format!("{}/ui/login?next={next}", s.url)).await;
    b.find("#token")
        .await
        .send_keys(&admin_token(s))
        .await
        .unwrap();
    b.find("form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.find("nav form button").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_the_right_one_opens_a_session() {
    if !browser::available() {
        return;
    }
    let s = TestServer::start(&[]).await;
    let b = Browser::start().await;
    b.goto(&format!("{}/ui/machines", s.url)).await;
    // Not logged in: the admin page sends the browser to the login form.
    assert_eq!(b.url().await.path(), "/ui/login");
    b.shot("login").await;
    b.find("#token")
        .await
        .send_keys("not-the-token")
        .await
        .unwrap();
    b.find("form.card button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for_text("that is not the admin token").await;
    assert!(
        !b.has("nav form button").await,
        "no session after a wrong token"
    );

    log_in(&b, &s, "/ui/machines").await;
    assert_eq!(b.url().await.path(), "/ui/machines");
    // Log out: the admin pages need the login again.
    b.find("nav form button").await.click().await.unwrap();
    // The logout form's answer is a redirect away from the page: wait for it, or the next
    // navigation races with it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while b.url().await.path() == "/ui/machines" {
        assert!(
            std::time::Instant::now() < deadline,
            "logout never left the page"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    b.goto(&format!("{}/ui/machines", s.url)).await;
    assert_eq!(b.url().await.path(), "/ui/login");
    b.close().await;
}

/// An `application/x-www-form-urlencoded` body.
pub fn form<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k.as_ref(), v.as_ref());
    }
    s.finish()
}

/// A session cookie obtained through the login form with a plain HTTP client.
pub async fn session_cookie(s: &TestServer) -> (reqwest::Client, String) {
    bootfactory::init_crypto();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login_page = client
        .get(format!("{}/ui/login", s.url))
        .send()
        .await
        .unwrap();
    let login_cookie = login_page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("bootfactory_login="))
        .expect("login cookie");
    let nonce = login_cookie.split_once('=').unwrap().1.to_string();
    let r = client
        .post(format!("{}/ui/login", s.url))
        .header("cookie", &login_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("token", admin_token(s)),
            ("csrf", nonce),
            ("next", "/".to_string()),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("bootfactory_session="))
        .expect("session cookie");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    assert!(!session.contains("Secure"), "plain HTTP: {session}");
    (client, session.split(';').next().unwrap().to_string())
}

#[tokio::test]
async fn posts_without_the_csrf_token_or_a_session_are_refused() {
    let s = TestServer::start(&[]).await;
    let (client, cookie) = session_cookie(&s).await;
    // Logout without the CSRF token: refused, and the session still works.
    let r = client
        .post(format!("{}/ui/logout", s.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", "wrong")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("CSRF token"));
    let r = client
        .post(format!("{}/ui/logout", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // No session at all: 403 for a POST.
    let r = client
        .post(format!("{}/ui/logout", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", "x")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The login form itself needs its own token.
    let r = client
        .post(format!("{}/ui/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", admin_token(&s))]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    assert_eq!(
        r.headers()["content-type"],
        "text/html; charset=utf-8",
        "UI errors are pages"
    );
}

#[tokio::test]
async fn static_files_are_cacheable_and_pages_are_not() {
    bootfactory::init_crypto();
    let s = TestServer::start(&[]).await;
    let page = reqwest::get(format!("{}/ui/login", s.url)).await.unwrap();
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let html = page.text().await.unwrap();
    let css = html
        .split("href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .filter(|h| h.contains("/ui/static/app."))
        .expect("stylesheet link")
        .to_string();
    let r = reqwest::get(format!("{}{css}", s.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/css; charset=utf-8");
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let r = reqwest::get(format!("{}/ui/static/app.css", s.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "only hashed names are served");
    let r = reqwest::get(format!("{}/ui/static/..%2fCargo.toml", s.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn under_a_sub_path_pages_answer_with_and_without_the_prefix_and_link_under_it() {
    bootfactory::init_crypto();
    let port = crate::support::tools::free_port();
    let listen = format!("127.0.0.1:{port}");
    let external = format!("http://127.0.0.1:{port}/factory/");
    let s = TestServer::start(&[("http.listen", &listen), ("http.externalURL", &external)]).await;
    for path in ["/factory/ui/login", "/ui/login"] {
        let r = reqwest::get(format!("{}{path}", s.url)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.contains("Path=/factory/"), "{cookie}");
        let html = r.text().await.unwrap();
        assert!(html.contains("href=\"/factory/ui/static/app."), "{html}");
        assert!(html.contains("action=\"/factory/ui/login\""), "{html}");
        assert!(!html.contains("/factory/factory"), "{html}");
    }
    // An admin page without a session sends the browser to the login form under the prefix.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/factory/ui/machines", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/factory/ui/login?next=%2Fui%2Fmachines"
    );
    // The factory API answers under the prefix too; other paths are untouched.
    let r = reqwest::get(format!("{}/factory/healthz", s.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{}/factoryx/healthz", s.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// The session's CSRF token, read off the admin page at `path` with a plain client.
pub async fn csrf_of(s: &TestServer, client: &reqwest::Client, cookie: &str, path: &str) -> String {
    let html = client
        .get(format!("{}{path}", s.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf field")
        .to_string()
}
