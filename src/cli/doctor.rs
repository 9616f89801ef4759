//! `bootfactory doctor [--json]`: one screen of what an operator needs to know — the
//! configuration file, the data directory, free disk, the store's integrity summary, the
//! versions it can serve offline, upstream reachability, PXE ports, interfaces and
//! capabilities, and the optional build tools. Each check is OK, WARN or FAIL with a hint;
//! the exit code is 1 when any check fails. The checks are [`crate::doctor`]'s.
//!
//! When a service answers — on the admin socket ([`super::service::connect`]), else over
//! HTTP at `--server` or the configured URL with the admin token — the store and version
//! checks are its (`GET /api/v1/doctor`); otherwise the store is opened here, as the data
//! directory's owner only.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::Context;
use super::machine::{ServerArgs, http_client};
use crate::assign::client::AdminClient;
use crate::config::Config;
use crate::doctor::{self, Check, Report, Status, StoreAccess};

/// How long the service probe (`/healthz`) may take.
const SERVICE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub(super) struct DoctorArgs {
    /// Print the checks as JSON (`{"checks":[{"check","status","message","hint"}]}`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub(super) fn run(cx: &Context, args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(collect(cx, args));
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.render_text()
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(e).context("cannot write the report");
        }
        _ => {}
    }
    Ok(if report.worst() == Status::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn collect(cx: &Context<'_>, args: &DoctorArgs) -> Report {
    let mut report = Report::default();
    let config = match cx.load_config() {
        Ok(c) => c,
        Err(e) => {
            report
                .checks
                .push(doctor::config_error(cx.config_file(), &format!("{e:#}")));
            return report;
        }
    };
    report.checks.push(doctor::config_file(cx.config_file()));
    let (dir_check, dir) = doctor::data_dir(&config);
    report.checks.push(dir_check);
    report.checks.push(doctor::free_disk(&config));
    match service(&config, &args.server).await {
        Service::Answered(checks) => report.checks.extend(checks),
        other => {
            let (service_check, url) = match other {
                Service::NotRunning(url) => (None, url),
                Service::Unusable(check, url) => (Some(check), url),
                Service::Answered(_) => unreachable!("handled above"),
            };
            report.checks.extend(service_check);
            match doctor::store_direct(&config, dir.as_ref()).await {
                StoreAccess::Checked(c) | StoreAccess::Skipped(c) => report.checks.extend(c),
                StoreAccess::Locked => report.checks.push(Check {
                    check: "store".into(),
                    status: Status::Warn,
                    message: format!(
                        "in use by another process (its index is locked), and no service answered the admin API at {url}"
                    ),
                    hint: Some(
                        "wait for the other bootfactory command, or pass --server/--token for the running service".into(),
                    ),
                }),
            }
        }
    }
    report.checks.extend(doctor::upstream(&config).await);
    report.checks.extend(doctor::pxe(&config));
    report.checks.extend(doctor::tools());
    report
}

enum Service {
    /// The service answered `GET /api/v1/doctor`.
    Answered(Vec<Check>),
    /// Something answers `/healthz` but the admin API did not help (the check says why).
    Unusable(Check, String),
    /// Nothing answers at the URL.
    NotRunning(String),
}

async fn service(config: &Config, server: &ServerArgs) -> Service {
    let url = server
        .server
        .clone()
        .unwrap_or_else(|| config.external_url());
    let url = url.trim_end_matches('/').to_string();
    // The admin socket first, unless the command names a server or a token. When it may
    // not be used, HTTP with the admin token (if this user has it) is tried before saying so.
    let mut socket_refused = None;
    if server.server.is_none() && server.token.is_none() {
        match super::service::connect(config).await {
            Ok(Some(client)) => return ask(&client, url).await,
            Ok(None) => {}
            Err(e) => socket_refused = Some(e),
        }
    }
    let refused = |e: anyhow::Error, url: String| {
        Service::Unusable(
            Check {
                check: "service".into(),
                status: Status::Warn,
                message: format!("{e:#}"),
                hint: Some(
                    "run doctor as root or the service user to check the store through the service"
                        .into(),
                ),
            },
            url,
        )
    };
    crate::init_crypto();
    let Ok(probe) = reqwest::Client::builder()
        .timeout(SERVICE_PROBE_TIMEOUT)
        .build()
    else {
        return Service::NotRunning(url);
    };
    match probe.get(format!("{url}/healthz")).send().await {
        Ok(r) if r.status().is_success() => {}
        _ => {
            return match socket_refused {
                Some(e) => refused(e, url),
                None => Service::NotRunning(url),
            };
        }
    }
    match (http_client(config, server), socket_refused) {
        (Ok(client), _) => ask(&client, url).await,
        (Err(_), Some(e)) => refused(e, url),
        (Err(e), None) => Service::Unusable(
            Check {
                check: "service".into(),
                status: Status::Warn,
                message: format!("running at {url}, but {e:#}"),
                hint: Some(
                    "run doctor as root or the service user, or pass --token, to check the store through it".into(),
                ),
            },
            url,
        ),
    }
}

/// `GET /api/v1/doctor` of the service `client` reaches.
async fn ask(client: &AdminClient, url: String) -> Service {
    let answer = client
        .request_json(
            reqwest::Method::GET,
            "/api/v1/doctor",
            None,
            "asking the service",
        )
        .await;
    let where_ = client.target();
    match answer {
        Ok(v) => match serde_json::from_value::<Report>(v.unwrap_or_default()) {
            Ok(r) => Service::Answered(r.checks),
            Err(e) => Service::Unusable(
                Check {
                    check: "service".into(),
                    status: Status::Warn,
                    message: format!(
                        "running ({where_}), its /api/v1/doctor answer does not parse: {e}"
                    ),
                    hint: Some("run the same bootfactory version as the service".into()),
                },
                url,
            ),
        },
        Err(e) => Service::Unusable(
            Check {
                check: "service".into(),
                status: Status::Warn,
                message: format!("running ({where_}), but {e:#}"),
                hint: Some(
                    "check the admin token (--token, api.adminToken, <dataDir>/admin-token)".into(),
                ),
            },
            url,
        ),
    }
}
