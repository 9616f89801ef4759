//! `bootfactory warm <schematic> <version>`: builds a machine's boot assets on the running
//! server before the machine boots (`POST /api/v1/warm`: over the admin socket when the
//! service answers there, else HTTP with the admin token, as `machine …`), and prints what was
//! built, its size and the time it took. By default what `/pxe` serves (command line, kernel,
//! initramfs); `--boot iso|uki` or `--asset <path>` for more.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use super::Context;
use super::machine::{ServerArgs, admin_command};

/// How long the CLI waits for a warm-up (a first ISO build can take minutes).
const WARM_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[derive(clap::Args, Debug)]
pub(super) struct WarmArgs {
    /// Schematic ID.
    schematic: String,
    /// Talos version (v1.11.6).
    version: String,
    /// Platform.
    #[arg(long, default_value = "metal")]
    platform: String,
    /// amd64 or arm64.
    #[arg(long, default_value = "amd64")]
    arch: String,
    /// What the machine boots: pxe (command line, kernel, initramfs), iso, uki (repeatable).
    #[arg(long, value_name = "KIND", default_value = "pxe")]
    boot: Vec<String>,
    /// An /image asset path to build as well (`metal-amd64.raw.zst`; repeatable).
    #[arg(long = "asset", value_name = "PATH")]
    assets: Vec<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub(super) fn run(cx: &Context, args: &WarmArgs) -> anyhow::Result<ExitCode> {
    let config = cx.load_config()?;
    admin_command(&config, &args.server, |client| async move {
        let mut assets = args.boot.clone();
        assets.extend(args.assets.iter().cloned());
        let body = json!({
            "schematic": args.schematic,
            "version": args.version,
            "platform": args.platform,
            "arch": args.arch,
            "assets": assets,
        });
        // Builds take as long as they take: the call's own deadline, not the client's 60 s.
        let req = client
            .request(reqwest::Method::POST, "/api/v1/warm")
            .json(&body)
            .timeout(WARM_TIMEOUT);
        let report = client.send(req, "warming up").await?.unwrap_or_default();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report_table(&report));
        }
        Ok(())
    })
}

/// `POST /api/v1/warm`'s report for people.
fn report_table(report: &Value) -> String {
    let mut out = format!(
        "{:<28}  {:>10}  {:<6}  {:>8}\n",
        "ASSET", "SIZE", "", "TIME"
    );
    for a in report
        .get("assets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let size = a.get("size").and_then(Value::as_u64).unwrap_or(0);
        out.push_str(&format!(
            "{:<28}  {:>10}  {:<6}  {:>7.1}s\n",
            a.get("path").and_then(Value::as_str).unwrap_or("-"),
            human_size(size),
            if a.get("cached").and_then(Value::as_bool) == Some(true) {
                "cached"
            } else {
                "built"
            },
            a.get("seconds").and_then(Value::as_f64).unwrap_or(0.0),
        ));
    }
    out.push_str(&format!(
        "schematic {} Talos {}: ready in {:.1}s\n",
        report
            .get("schematic")
            .and_then(Value::as_str)
            .unwrap_or("-"),
        report.get("version").and_then(Value::as_str).unwrap_or("-"),
        report.get("seconds").and_then(Value::as_f64).unwrap_or(0.0),
    ));
    out
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_a_table() {
        let report = json!({
            "schematic": "abc", "version": "v1.11.6", "seconds": 2.5,
            "assets": [
                {"path": "kernel-amd64", "size": 3_145_728u64, "cached": false, "seconds": 0.25},
                {"path": "cmdline-metal-amd64", "size": 90, "cached": true, "seconds": 0.0}
            ]
        });
        let t = report_table(&report);
        assert!(t.contains("kernel-amd64"), "{t}");
        assert!(t.contains("3.0 MiB") && t.contains("built"), "{t}");
        assert!(t.contains("90 B") && t.contains("cached"), "{t}");
        assert!(t.contains("ready in 2.5s"), "{t}");
    }
}
