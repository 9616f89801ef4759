//! A client for the admin API, used by the commands that work on a running `bootfactory
//! serve` (the store is opened by one process only): over the admin Unix socket
//! (`api.socket`, authorised by the caller's uid) or over HTTP with the admin token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use super::{Assignment, MacAddr};

/// How long a plain request (not an upload or a download) may take over HTTP.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest silence while reading an answer over the admin socket (long operations stream
/// progress lines, so silence this long means the server is stuck).
const SOCKET_READ_TIMEOUT: Duration = Duration::from_secs(600);

/// Talks to a running bootfactory's `/api/v1`.
#[derive(Debug)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    socket: Option<PathBuf>,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for `base` (`http://127.0.0.1:8080`) with the admin `token`.
    pub fn new(base: &str, token: &str) -> anyhow::Result<AdminClient> {
        crate::init_crypto();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token: Some(token.to_string()),
            socket: None,
            http,
        })
    }

    /// A client for the admin socket at `path` (no token: the server authorises the uid).
    /// Requests have no total deadline (imports and exports stream for as long as they
    /// take), only one on each read.
    pub fn unix(path: &Path) -> anyhow::Result<AdminClient> {
        crate::init_crypto();
        let http = reqwest::Client::builder()
            .unix_socket(path)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(SOCKET_READ_TIMEOUT)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(AdminClient {
            base: "http://localhost".to_string(),
            token: None,
            socket: Some(path.to_path_buf()),
            http,
        })
    }

    /// Where the client connects, for messages: the socket's path or the base URL.
    pub fn target(&self) -> String {
        match &self.socket {
            Some(p) => format!("the admin socket {}", p.display()),
            None => self.base.clone(),
        }
    }

    /// A request to `path` (`/api/v1/…`) with the client's authentication, for callers that
    /// stream a body or an answer.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends `req` (made by [`AdminClient::request`]); a non-2xx answer is an error naming
    /// `what`, an empty body `None`, else the body as JSON.
    pub(crate) async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<Option<Value>> {
        let resp = self.response(req, what).await?;
        let text = resp
            .text()
            .await
            .with_context(|| format!("{what}: cannot read the answer"))?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{what}: the server answered something that is not JSON")
        })?))
    }

    /// Sends `req` and returns the response when it is a success (its body unread).
    pub(crate) async fn response(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.with_context(|| match &self.socket {
            Some(_) => format!("{what}: cannot talk to bootfactory on {}", self.target()),
            None => format!(
                "cannot reach bootfactory at {} (is `bootfactory serve` running? set --server)",
                self.base
            ),
        })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("{what}: {} {}", status.as_u16(), text.trim());
        }
        Ok(resp)
    }

    /// `method path` with an optional JSON `body`; the answer as JSON (`None` when empty).
    pub(crate) async fn request_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> anyhow::Result<Option<Value>> {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(body);
        }
        if self.socket.is_some() {
            req = req.timeout(REQUEST_TIMEOUT);
        }
        self.send(req, what).await
    }

    /// `PUT /api/v1/machines/{mac}`.
    pub async fn assign(&self, mac: MacAddr, a: &Assignment) -> anyhow::Result<Value> {
        let body = serde_json::to_value(a)?;
        Ok(self
            .request_json(
                reqwest::Method::PUT,
                &format!("/api/v1/machines/{mac}"),
                Some(&body),
                &format!("assigning {mac}"),
            )
            .await?
            .unwrap_or_default())
    }

    /// `DELETE /api/v1/machines/{mac}`.
    pub async fn unassign(&self, mac: MacAddr) -> anyhow::Result<()> {
        self.request_json(
            reqwest::Method::DELETE,
            &format!("/api/v1/machines/{mac}"),
            None,
            &format!("unassigning {mac}"),
        )
        .await?;
        Ok(())
    }

    /// `PUT /api/v1/default`.
    pub async fn set_default(&self, a: &Assignment) -> anyhow::Result<Value> {
        let body = serde_json::to_value(a)?;
        Ok(self
            .request_json(
                reqwest::Method::PUT,
                "/api/v1/default",
                Some(&body),
                "setting the default",
            )
            .await?
            .unwrap_or_default())
    }

    /// `GET /api/v1/machines`.
    pub async fn machines(&self) -> anyhow::Result<Value> {
        Ok(self
            .request_json(
                reqwest::Method::GET,
                "/api/v1/machines",
                None,
                "listing machines",
            )
            .await?
            .unwrap_or_default())
    }

    /// Reads a `GET /api/v1/status` answer.
    pub(crate) async fn status_of(&self, resp: reqwest::Response) -> anyhow::Result<ServerStatus> {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!(
                "asking the server's status: {} {}",
                status.as_u16(),
                text.trim()
            );
        }
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} answers something that is not bootfactory's status",
                self.target()
            )
        })
    }
}

/// What `GET /api/v1/status` answers.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// The server's version.
    pub version: String,
    /// The data directory it serves.
    pub data_dir: PathBuf,
    /// Its process ID.
    pub pid: i32,
}

/// Renders `GET /api/v1/machines` as a table for people.
pub fn machines_table(list: &Value) -> String {
    let mut out = format!(
        "{:<17}  {:<6}  {:<12}  {:<8}  {:<15}  {:<20}  {}\n",
        "MAC", "ARCH", "SCHEMATIC", "VERSION", "IP", "LAST SEEN", "LAST SERVED"
    );
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    for m in list
        .get("machines")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let a = m.get("assignment").cloned().unwrap_or(Value::Null);
        let seen = m.get("seen").cloned().unwrap_or(Value::Null);
        let schematic: String = s(&a, "schematic").chars().take(12).collect();
        let arch = a
            .get("arch")
            .or_else(|| seen.get("arch"))
            .and_then(Value::as_str)
            .unwrap_or("-");
        out.push_str(&format!(
            "{:<17}  {:<6}  {:<12}  {:<8}  {:<15}  {:<20}  {}\n",
            s(m, "mac"),
            arch,
            schematic,
            s(&a, "version"),
            // The full DHCP server's bound lease, else the address the machine last asked from.
            m.get("leaseIp")
                .and_then(Value::as_str)
                .map_or_else(|| s(&seen, "ip"), str::to_string),
            s(&seen, "lastSeen"),
            s(&seen, "lastServed"),
        ));
    }
    if let Some(d) = list.get("default").filter(|d| !d.is_null()) {
        out.push_str(&format!(
            "default: schematic {} version {}\n",
            s(d, "schematic"),
            s(d, "version")
        ));
    }
    if let Some(p) = list.get("unassigned").and_then(Value::as_str) {
        out.push_str(&format!("unassigned machines: {p}\n"));
    }
    out
}
