//! `bootfactory machine assign|unassign|list`: per-MAC assignments through the running
//! server's admin API (`/api/v1/machines`): over the admin socket when the service answers
//! there ([`super::service::connect`]), else over HTTP with the admin token.
//!
//! The old spellings `assign`, `unassign` and `machines` (hidden, for one release) call the
//! same functions.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::Context;
use crate::assign::client::AdminClient;
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub(super) enum MachineCommand {
    /// Assign what a machine boots (or, with `default`, what unassigned machines boot).
    Assign(AssignArgs),
    /// Remove a machine's assignment.
    Unassign(UnassignArgs),
    /// List assigned machines and every machine that asked to boot.
    List(ListArgs),
}

/// Where the admin API is and how to authenticate.
#[derive(clap::Args, Debug)]
pub(super) struct ServerArgs {
    /// The running server's URL (default: http.externalURL, else from http.listen).
    #[arg(long, value_name = "URL")]
    pub(super) server: Option<String>,
    /// Admin token (default: api.adminToken, else <data-dir>/admin-token).
    #[arg(
        long,
        env = "BOOTFACTORY_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(super) token: Option<String>,
}

#[derive(clap::Args, Debug)]
pub(super) struct AssignArgs {
    /// The machine's MAC address (52:54:00:12:34:56), or `default` for unassigned machines.
    mac: String,
    /// Schematic ID.
    #[arg(long)]
    schematic: String,
    /// Talos version (v1.9.0).
    #[arg(long)]
    version: String,
    /// Platform.
    #[arg(long, default_value = "metal")]
    platform: String,
    /// amd64 or arm64 (default: what the firmware reports).
    #[arg(long)]
    arch: Option<String>,
    /// A kernel argument to append (repeatable).
    #[arg(long = "extra-kernel-arg", value_name = "ARG")]
    extra_kernel_args: Vec<String>,
    /// A label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Fixed IPv4 address (full DHCP mode: a static reservation; stored but unused in proxy
    /// mode).
    #[arg(long, value_name = "A.B.C.D")]
    ip: Option<std::net::Ipv4Addr>,
    /// Host name sent as DHCP option 12 (full DHCP mode).
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args, Debug)]
pub(super) struct UnassignArgs {
    /// The machine's MAC address (52:54:00:12:34:56).
    mac: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(clap::Args, Debug)]
pub(super) struct ListArgs {
    /// Print the API's JSON instead of a table (with --watch: one JSON event per line).
    #[arg(long)]
    json: bool,
    /// Follow boots live: after the table, print a line whenever a machine is seen for the
    /// first time, asks again (and what it was served), or is assigned or unassigned.
    #[arg(long)]
    watch: bool,
    /// With --watch: seconds between two looks at the admin API.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 2.0,
        requires = "watch"
    )]
    interval: f64,
    /// With --watch: stop after this many events.
    #[arg(
        long,
        value_name = "N",
        requires = "watch",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    count: Option<u64>,
    #[command(flatten)]
    server: ServerArgs,
}

pub(super) fn run(cx: &Context, cmd: &MachineCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MachineCommand::Assign(args) => assign(cx, args),
        MachineCommand::Unassign(args) => unassign(cx, args),
        MachineCommand::List(args) => list(cx, args),
    }
}

/// `machine assign` (and the old `assign`).
pub(super) fn assign(cx: &Context, args: &AssignArgs) -> anyhow::Result<ExitCode> {
    let config = cx.load_config()?;
    admin_command(&config, &args.server, |client| async move {
        let mut labels = std::collections::BTreeMap::new();
        for l in &args.labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--label {l:?}: write KEY=VALUE"))?;
            labels.insert(k.to_string(), v.to_string());
        }
        let assignment = crate::assign::Assignment {
            schematic: args.schematic.clone(),
            version: args.version.clone(),
            platform: args.platform.clone(),
            arch: args.arch.clone(),
            extra_kernel_args: args.extra_kernel_args.clone(),
            labels,
            ip: args.ip,
            hostname: args.hostname.clone(),
        };
        assignment.validate()?;
        let answer = if args.mac == "default" {
            client.set_default(&assignment).await?
        } else {
            let mac: crate::mac::MacAddr = args.mac.parse()?;
            client.assign(mac, &assignment).await?
        };
        println!("{}", serde_json::to_string_pretty(&answer)?);
        Ok(())
    })
}

/// `machine unassign` (and the old `unassign`).
pub(super) fn unassign(cx: &Context, args: &UnassignArgs) -> anyhow::Result<ExitCode> {
    let config = cx.load_config()?;
    let mac: crate::mac::MacAddr = args.mac.parse()?;
    admin_command(&config, &args.server, |client| async move {
        client.unassign(mac).await?;
        println!("{mac}: assignment removed");
        Ok(())
    })
}

/// `machine list` (and the old `machines`).
pub(super) fn list(cx: &Context, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let config = cx.load_config()?;
    if args.watch && !(0.1..=3600.0).contains(&args.interval) {
        anyhow::bail!("--interval must be between 0.1 and 3600 seconds");
    }
    admin_command(&config, &args.server, |client| async move {
        let list = client.machines().await?;
        let text = if args.json && !args.watch {
            serde_json::to_string_pretty(&list)? + "\n"
        } else if !args.json {
            crate::assign::client::machines_table(&list)
        } else {
            String::new()
        };
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            // A reader that went away (`| head`) ends the command, quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            r => r.context("cannot write to stdout")?,
        }
        drop(out);
        if args.watch {
            watch(&client, list, args).await?;
        }
        Ok(())
    })
}

/// `machine list --watch`: polls the admin API and prints what changed, until `--count`
/// events (or forever).
async fn watch(
    client: &AdminClient,
    mut prev: serde_json::Value,
    args: &ListArgs,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let interval = std::time::Duration::from_secs_f64(args.interval);
    if !args.json {
        eprintln!("watching for boots (every {:?}; Ctrl-C stops)", interval);
    }
    let mut printed = 0u64;
    loop {
        tokio::time::sleep(interval).await;
        let next = client.machines().await?;
        // Compared with an answer that is not a machine list, every machine would look new.
        if next
            .get("machines")
            .and_then(serde_json::Value::as_array)
            .is_none()
        {
            anyhow::bail!(
                "the server's machine list answer has no \"machines\" list (from {}): stopped watching",
                client.target()
            );
        }
        for event in crate::assign::watch::changes(&prev, &next) {
            let line = if args.json {
                serde_json::to_string(&event)?
            } else {
                event.line()
            };
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{line}").and_then(|()| out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                r => r.context("cannot write to stdout")?,
            }
            printed += 1;
            if args.count.is_some_and(|c| printed >= c) {
                return Ok(());
            }
        }
        prev = next;
    }
}

/// Runs `f` with an admin API client: the admin socket when the service answers there (and
/// neither `--server` nor `--token` is given), else HTTP with the admin token.
pub(super) fn admin_command<'a, F, Fut>(
    config: &Config,
    server: &ServerArgs,
    f: F,
) -> anyhow::Result<ExitCode>
where
    F: FnOnce(AdminClient) -> Fut + 'a,
    Fut: std::future::Future<Output = anyhow::Result<()>> + 'a,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let explicit = server.server.is_some() || server.token.is_some();
        let socket = if explicit {
            None
        } else {
            match super::service::connect(config).await {
                Ok(socket) => socket,
                // The socket is not this user's (or does not answer), but the admin token may
                // be (`api.adminToken` in a configuration they can read): HTTP with it, as
                // before the socket; without a token the socket's error says what to do.
                Err(e) => match http_client(config, server) {
                    Ok(client) => {
                        tracing::debug!(error = %format!("{e:#}"), "admin socket unusable; using HTTP with the admin token");
                        return f(client).await;
                    }
                    Err(_) => return Err(e),
                },
            }
        };
        let client = match socket {
            Some(client) => client,
            None => http_client(config, server)?,
        };
        f(client).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The admin API over HTTP, from `--server`/`--token` and the configuration.
pub(super) fn http_client(config: &Config, server: &ServerArgs) -> anyhow::Result<AdminClient> {
    let base = server
        .server
        .clone()
        .unwrap_or_else(|| config.external_url());
    let token = match &server.token {
        Some(t) => t.clone(),
        None => crate::assign::token::read(
            config.api.admin_token.as_deref(),
            &config.admin_token_path(),
        )
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no admin token: pass --token, set api.adminToken, or run where {} is readable",
                config.admin_token_path().display()
            )
        })?,
    };
    AdminClient::new(&base, &token)
}
