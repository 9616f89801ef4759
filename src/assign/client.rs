//! A client for the admin API, used by `bootfactory assign`, `unassign` and `machines`, so
//! they work while `bootfactory serve` runs (the store is opened by one process only).

use anyhow::{Context, bail};
use serde_json::Value;

use super::{Assignment, MacAddr};

/// Talks to a running bootfactory's `/api/v1`.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for `base` (`http://127.0.0.1:8080`) with the admin `token`.
    pub fn new(base: &str, token: &str) -> anyhow::Result<AdminClient> {
        crate::init_crypto();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        })
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<Option<Value>> {
        let resp = req.bearer_auth(&self.token).send().await.with_context(|| {
            format!(
                "cannot reach bootfactory at {} (is `bootfactory serve` running? set --server)",
                self.base
            )
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{what}: {} {}", status.as_u16(), text.trim());
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{what}: the server answered something that is not JSON")
        })?))
    }

    /// Any admin API call: `method` on `path` (`/api/v1/…`) with an optional JSON `body`,
    /// answered with JSON (`Null` for an empty answer); `what` names the call in errors.
    /// `timeout` replaces the client's 60 s for calls that take long (a store GC or verify).
    pub async fn request_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
        timeout: Option<std::time::Duration>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        Ok(self.send(req, what).await?.unwrap_or_default())
    }

    /// `PUT /api/v1/machines/{mac}`.
    pub async fn assign(&self, mac: MacAddr, a: &Assignment) -> anyhow::Result<Value> {
        let req = self
            .http
            .put(format!("{}/api/v1/machines/{mac}", self.base))
            .json(a);
        Ok(self
            .send(req, &format!("assigning {mac}"))
            .await?
            .unwrap_or_default())
    }

    /// `DELETE /api/v1/machines/{mac}`.
    pub async fn unassign(&self, mac: MacAddr) -> anyhow::Result<()> {
        let req = self
            .http
            .delete(format!("{}/api/v1/machines/{mac}", self.base));
        self.send(req, &format!("unassigning {mac}")).await?;
        Ok(())
    }

    /// `PUT /api/v1/default`.
    pub async fn set_default(&self, a: &Assignment) -> anyhow::Result<Value> {
        let req = self
            .http
            .put(format!("{}/api/v1/default", self.base))
            .json(a);
        Ok(self
            .send(req, "setting the default")
            .await?
            .unwrap_or_default())
    }

    /// `GET /api/v1/machines`.
    pub async fn machines(&self) -> anyhow::Result<Value> {
        let req = self.http.get(format!("{}/api/v1/machines", self.base));
        Ok(self
            .send(req, "listing machines")
            .await?
            .unwrap_or_default())
    }
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
            s(&seen, "ip"),
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
