//! Network-boot routes: `/boot/{mac}.ipxe` (what our DHCP points iPXE at), `/ipxe/{name}`
//! (the embedded binaries, for UEFI HTTP boot), and the admin API `/api/v1/machines…` and
//! `/api/v1/default`, `POST /api/v1/warm` (bearer token).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::assign::boot::{BootError, BootScript, boot_script};
use crate::assign::check::{CheckError, SetError, assign_checked, set_default_checked};
use crate::assign::{AssignError, Assignment, MachineView};
use crate::factory::chain::ChainError;
use crate::factory::service::FactoryError;
use crate::factory::warm::{WarmError, WarmRequest};
use crate::mac::MacAddr;

impl From<AssignError> for ApiError {
    fn from(e: AssignError) -> Self {
        match e {
            AssignError::IpTaken { .. } => {
                ApiError::new(StatusCode::CONFLICT, format!("assignment refused: {e}"))
            }
            AssignError::IpOutsideSubnet { .. }
            | AssignError::IpInUse { .. }
            | AssignError::DefaultReservation => {
                ApiError::bad_request(format!("invalid assignment: {e}"))
            }
            e => ApiError::internal(e),
        }
    }
}

pub(crate) fn parse_mac(raw: &str) -> Result<MacAddr, ApiError> {
    raw.parse::<MacAddr>()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `GET /boot/{mac}.ipxe[?arch=amd64]`: the machine's boot script.
pub async fn boot(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, ApiError> {
    let raw = crate::ipxe::script::boot_script_mac(&file).ok_or_else(|| {
        ApiError::not_found(format!("{file:?}: boot scripts are named <mac>.ipxe"))
    })?;
    let mac = parse_mac(raw)?;
    let peer_ip = peer.map(|axum::Extension(ConnectInfo(a))| a.ip().to_string());
    let result = boot_script(
        &state.assignments,
        &state.factory,
        &state.config.external_pxe_url(),
        mac,
        query.get("arch").map(String::as_str),
        peer_ip,
    )
    .await;
    match result {
        Ok(BootScript::Script(text)) => {
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
        }
        Ok(BootScript::Ignored) => Err(ApiError::not_found(format!(
            "{mac} has no assignment (policy ignore)"
        ))),
        Err(BootError::Assign(e)) => Err(e.into()),
        Err(BootError::Factory(e)) => Err(match e {
            // The assignment points at something the factory refuses: the operator must fix
            // the assignment, so say what is wrong rather than 404.
            FactoryError::SchematicNotFound(_) | FactoryError::VersionNotAvailable(_) => {
                ApiError::new(StatusCode::CONFLICT, format!("{mac}'s assignment: {e}"))
            }
            other => other.into(),
        }),
    }
}

/// `GET|HEAD /ipxe/{name}`: an iPXE binary as served (EFI builds trust the boot CA when TLS
/// is on, [`crate::ipxe::trust`]).
pub async fn ipxe_binary(
    State(state): State<AppState>,
    method: Method,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let binary = state
        .ipxe
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no iPXE binary named {name:?}")))?;
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::ETAG, format!("\"{}\"", binary.sha256)),
        (header::CONTENT_LENGTH, binary.data.len().to_string()),
    ];
    if method == Method::HEAD {
        return Ok((headers, ()).into_response());
    }
    Ok((headers, binary.data.clone()).into_response())
}

/// Requires `Authorization: Bearer <admin token>` on the admin API. With TLS configured, the
/// token is refused over plain HTTP from non-loopback clients (403) unless
/// `http.tls.adminOverPlain` allows it.
///
/// On the admin socket the peer's uid decides instead ([`super::listener::LocalPeer::admin`]:
/// root or the service's own user); no token is needed or looked at there.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let local = request
        .extensions()
        .get::<super::listener::ConnInfo>()
        .and_then(|c| c.local);
    if let Some(peer) = local {
        if peer.admin {
            return next.run(request).await;
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "uid {} may not use the admin socket: run as root or as the service's user",
                peer.uid
            ),
        )
        .into_response();
    }
    if let Some(refused) = super::admin_over_plain_refused(&state, request.extensions().get()) {
        return refused.into_response();
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !crate::assign::token::authorized(presented, &state.admin_token) {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the admin API needs Authorization: Bearer <token> (api.adminToken, or the admin-token file in the data directory)",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"bootfactory\""),
        );
        return r;
    }
    next.run(request).await
}

/// `GET /api/v1/machines`: every assigned or seen machine, and the default.
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let a = &state.assignments;
    #[derive(Serialize)]
    struct ListBody {
        machines: Vec<MachineView>,
        #[serde(skip_serializing_if = "Option::is_none")]
        default: Option<Assignment>,
        unassigned: crate::config::UnassignedPolicy,
    }
    let mut machines = a.machines()?;
    let mut ips = lease_ips(&state);
    for m in &mut machines {
        m.lease_ip = ips.remove(&m.mac);
    }
    Ok(Json(ListBody {
        machines,
        default: a.default_assignment()?,
        unassigned: a.policy(),
    })
    .into_response())
}

/// `GET /api/v1/machines/{mac}`.
pub async fn get_machine(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let mac = parse_mac(&raw)?;
    match state.assignments.machine_view(mac)? {
        Some(mut view) => {
            view.lease_ip = lease_ips(&state).remove(&mac);
            Ok(Json(view).into_response())
        }
        None => Err(ApiError::not_found(format!(
            "{mac} is neither assigned nor seen"
        ))),
    }
}

/// `PUT /api/v1/machines/{mac}`: sets the machine's assignment (JSON [`Assignment`]).
pub async fn put_machine(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mac = parse_mac(&raw)?;
    let assignment = assignment_body(&headers, &body)?;
    let seen = assign_checked(
        &state.assignments,
        &state.factory,
        mac,
        &assignment,
        wants_warm(&state, &query),
    )
    .await?;
    Ok(Json(MachineView {
        mac,
        assignment: Some(assignment),
        seen,
        lease_ip: lease_ips(&state).remove(&mac),
    })
    .into_response())
}

/// The bound lease address of each MAC (full DHCP mode; empty in proxy mode).
fn lease_ips(state: &AppState) -> HashMap<MacAddr, std::net::Ipv4Addr> {
    state.leases.as_ref().map_or_else(HashMap::new, |l| {
        l.bound_by_mac(crate::dhcp::leases::unix_now())
    })
}

/// `GET /api/v1/leases`: the full DHCP server's leases by address (empty in proxy mode).
pub async fn leases(State(state): State<AppState>) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct LeaseBody {
        ip: std::net::Ipv4Addr,
        mac: String,
        state: &'static str,
        expires: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        hostname: Option<String>,
        #[serde(rename = "static")]
        is_static: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    }
    #[derive(Serialize)]
    struct Body {
        leases: Vec<LeaseBody>,
    }
    let list = state
        .leases
        .as_ref()
        .map_or_else(Vec::new, |l| l.list(crate::dhcp::leases::unix_now()));
    let leases = list
        .into_iter()
        .map(|l| LeaseBody {
            ip: l.ip,
            mac: MacAddr(l.mac).to_string(),
            state: l.state.as_str(),
            expires: chrono::DateTime::from_timestamp(
                i64::try_from(l.expires).unwrap_or(i64::MAX),
                0,
            )
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            hostname: l.hostname,
            is_static: l.is_static,
            client_id: l.client_id.map(hex::encode),
        })
        .collect();
    Ok(Json(Body { leases }).into_response())
}

/// `DELETE /api/v1/machines/{mac}`: removes the machine's assignment.
pub async fn delete_machine(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let mac = parse_mac(&raw)?;
    if !state.assignments.remove(mac)? {
        return Err(ApiError::not_found(format!("{mac} has no assignment")));
    }
    tracing::info!(%mac, "machine unassigned");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/default`.
pub async fn get_default(State(state): State<AppState>) -> Result<Response, ApiError> {
    match state.assignments.default_assignment()? {
        Some(a) => Ok(Json(a).into_response()),
        None => Err(ApiError::not_found("no default assignment")),
    }
}

/// `PUT /api/v1/default`.
pub async fn put_default(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let assignment = assignment_body(&headers, &body)?;
    set_default_checked(&state.assignments, &state.factory, &assignment).await?;
    Ok(Json(assignment).into_response())
}

/// `DELETE /api/v1/default`.
pub async fn delete_default(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.assignments.remove_default()? {
        return Err(ApiError::not_found("no default assignment"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Decodes an assignment body (JSON [`Assignment`]).
fn assignment_body(headers: &HeaderMap, body: &[u8]) -> Result<Assignment, ApiError> {
    require_json(headers, "the assignment")?;
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid assignment: {e}")))
}

/// How an assignment that was not stored is answered, by the API and the machines page alike.
impl From<SetError> for ApiError {
    fn from(e: SetError) -> Self {
        match e {
            SetError::Check(e @ (CheckError::Invalid(_) | CheckError::Refused { .. })) => {
                ApiError::bad_request(format!("invalid assignment: {e}"))
            }
            // The assignment points at something the factory cannot boot (yet): 409, as
            // `/boot` answers for an assignment the factory refuses, naming the missing piece.
            SetError::Check(e @ CheckError::Broken(_)) => {
                ApiError::new(StatusCode::CONFLICT, format!("assignment refused: {e}"))
            }
            SetError::Check(CheckError::Unchecked(e)) => e.into(),
            SetError::Store(e) => e.into(),
        }
    }
}

/// `PUT /api/v1/machines/{mac}?warm=true` or `assignments.warmOnAssign`.
fn wants_warm(state: &AppState, query: &HashMap<String, String>) -> bool {
    match query.get("warm").map(String::as_str) {
        Some("true" | "1") => true,
        Some(_) => false,
        None => state.config.assignments.warm_on_assign,
    }
}

/// `POST /api/v1/warm`: builds a machine's boot assets now (JSON
/// [`WarmRequest`]) and answers what was built, sizes and times ([`WarmReport`]).
pub async fn warm(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers, "the warm-up")?;
    let request: WarmRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid warm-up: {e}")))?;
    match state.factory.warm(&request).await {
        Ok(report) => Ok(Json(report).into_response()),
        Err(e) => Err(warm_error(e)),
    }
}

/// A failed warm-up as an HTTP error (the API's and the builds page's): 400 for a wrong
/// request, 409 naming the missing piece for a broken boot chain, the factory's status for
/// an asset (prefixed with its path).
pub(super) fn warm_error(e: WarmError) -> ApiError {
    match e {
        WarmError::Invalid(m) => ApiError::bad_request(format!("invalid warm-up: {m}")),
        WarmError::Chain(ChainError::Unchecked(e)) => e.into(),
        WarmError::Chain(e) => {
            ApiError::new(StatusCode::CONFLICT, format!("the boot would fail: {e}"))
        }
        WarmError::Asset { path, error } => {
            let mut mapped = ApiError::from(error);
            mapped.message = format!("{path}: {}", mapped.message);
            mapped
        }
    }
}

fn require_json(headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        && !ct.starts_with("application/json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("send {what} as application/json, not {ct}"),
        ));
    }
    Ok(())
}
