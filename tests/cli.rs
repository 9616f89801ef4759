//! The `bootfactory` binary as a user runs it.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bootfactory"));
    // Keep the user's environment from leaking config into the tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("BOOTFACTORY_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn schematic_id_from_file_and_stdin() {
    let example = support::repo_root().join("schematics/example.yaml");
    let out = bin()
        .args(["schematic", "id"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "67fccca75e17620470675a886ee22dbcf05901de13a156a242a5b2f9a6f04a6e\n"
    );

    let mut child = bin()
        .args(["schematic", "id", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"customization":{"secureboot":{"includeWellKnownCertificates":true}}}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6"
    );
}

#[test]
fn schematic_canonical_prints_the_hashed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.json");
    std::fs::write(&f, r#"{"customization":{"diskImage":{"sectorSize":4096}}}"#).unwrap();
    let out = bin()
        .args(["schematic", "canonical"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "customization:\n    diskImage:\n        sectorSize: 4096\n"
    );
}

#[test]
fn invalid_schematic_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, "customization:\n  extraKernelArg: [x]\n").unwrap();
    let out = bin().args(["schematic", "id"]).arg(&f).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("extraKernelArg"), "{err}");
}

#[test]
fn version_and_help() {
    let out = bin().arg("--version").output().unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("bootfactory ")
    );
    let out = bin().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in ["--data-dir", "--http-listen", "BOOTFACTORY_HTTP_LISTEN"] {
        assert!(help.contains(needle), "serve --help lacks {needle}");
    }
}

#[test]
fn config_errors_name_the_key_and_precedence_holds() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "http:\n  listen: 127.0.0.1:1111\n  bogusKey: 1\n").unwrap();
    let out = bin()
        .args(["config", "show", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("bogusKey"));

    std::fs::write(
        &cfg,
        "http:\n  listen: 127.0.0.1:1111\nlog:\n  level: debug\n",
    )
    .unwrap();
    let out = bin()
        .args(["config", "show", "--config"])
        .arg(&cfg)
        .env("BOOTFACTORY_HTTP_LISTEN", "127.0.0.1:2222")
        .env("BOOTFACTORY_LOG_LEVEL", "warn")
        .args(["--log-level", "error"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.contains("listen: 127.0.0.1:2222"),
        "env beats file: {shown}"
    );
    assert!(shown.contains("level: error"), "flag beats env: {shown}");
}

#[test]
fn serve_runs_unprivileged_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = bin()
        .args(["serve", "--data-dir"])
        .arg(data.path())
        .args(["--http-listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");
    assert!(data.path().join("index.sled").exists());
}

#[test]
fn serve_with_unwritable_data_dir_explains() {
    let out = bin()
        .args([
            "serve",
            "--data-dir",
            "/proc/forbidden/bootfactory",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--data-dir"), "{err}");
}

#[test]
fn configuration_flags_are_listed_only_where_they_are_used() {
    let help = |args: &[&str]| {
        let out = bin().args(args).arg("--help").output().unwrap();
        assert!(out.status.success(), "{args:?} --help");
        String::from_utf8(out.stdout).unwrap()
    };
    let id = help(&["schematic", "id"]);
    assert!(!id.contains("--pxe-") && !id.contains("--http-"), "{id}");
    assert!(id.lines().count() < 40, "{id}");
    let serve = help(&["serve"]);
    assert!(
        serve.contains("--pxe-interfaces") && serve.contains("--http-listen"),
        "{serve}"
    );
    assert!(help(&["config", "show"]).contains("--http-listen"));
    let gc = help(&["store", "gc"]);
    assert!(
        gc.contains("--data-dir") && gc.contains("--dry-run"),
        "{gc}"
    );
    assert!(!gc.contains("--http-") && !gc.contains("--pxe-"), "{gc}");
    let top = help(&[]);
    for command in ["machine", "store", "mirror", "schematic", "config", "serve"] {
        assert!(top.contains(&format!("  {command} ")), "{top}");
    }
    // The old spellings work but are not listed.
    assert!(
        !top.contains("  machines ") && !top.contains("  assign "),
        "{top}"
    );
    assert!(help(&["machines"]).contains("--json"));

    // Flags before the subcommand (their old place) and variables still apply.
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["config", "show"])
        .env("BOOTFACTORY_HTTP_LISTEN", "127.0.0.1:3333")
        .output()
        .unwrap();
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.contains(&format!("dataDir: {}", dir.path().display())),
        "{shown}"
    );
    assert!(shown.contains("listen: 127.0.0.1:3333"), "{shown}");
}

#[test]
fn config_show_redacts_secrets_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "api:\n  adminToken: file-admin-secret\nupstream:\n  registries:\n    ghcr.io:\n      username: robot\n      password: file-registry-password\n    registry.example:\n      token: file-registry-token\n",
    )
    .unwrap();
    let show = |extra: &[&str]| {
        let out = bin()
            .args(["config", "show", "--config"])
            .arg(&cfg)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = show(&[]);
    for secret in [
        "file-admin-secret",
        "file-registry-password",
        "file-registry-token",
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert_eq!(shown.matches("<redacted>").count(), 3, "{shown}");
    assert!(shown.contains("username: robot"), "{shown}");
    // A secret from a flag is redacted too.
    assert!(!show(&["--api-admin-token", "flag-secret"]).contains("flag-secret"));

    let revealed = show(&["--reveal-secrets"]);
    for secret in [
        "file-admin-secret",
        "file-registry-password",
        "file-registry-token",
    ] {
        assert!(revealed.contains(secret), "{revealed}");
    }
    assert!(!revealed.contains("<redacted>"), "{revealed}");
}

/// A failure is printed once, with every cause below it once: the mirror, the upstream
/// client and the connection error each add their part and none repeats another's
/// (`src/errors.rs`).
#[test]
fn unreachable_upstream_error_names_each_cause_once() {
    // A loopback port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let data = tempfile::tempdir().unwrap();
    let registries = format!("{{ghcr.io: {{endpoint: 'http://127.0.0.1:{port}'}}}}");
    let out = bin()
        .args(["mirror", "pull", "--data-dir"])
        .arg(data.path())
        .args([
            "--upstream-registries",
            &registries,
            "--upstream-retries",
            "0",
        ])
        .arg("ghcr.io/siderolabs/unreachable:v1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let line = err
        .lines()
        .find(|l| l.starts_with("bootfactory: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.starts_with("bootfactory: cannot pull ghcr.io/siderolabs/unreachable:v1: "),
        "{line}"
    );
    for part in [
        "resolve ghcr.io/siderolabs/unreachable:v1",
        // The cause in words (`upstream::reason`), then the OS error's own text, each once.
        "connection refused by 127.0.0.1:",
        "Connection refused (os error",
    ] {
        assert_eq!(line.matches(part).count(), 1, "{part:?} once in: {line}");
    }
    // No part of the chain repeats the part before it.
    let parts: Vec<&str> = line.split(": ").collect();
    for pair in parts.windows(2) {
        assert_ne!(pair[0], pair[1], "{line}");
    }
}

#[test]
fn completion_scripts_parse_and_load() {
    for shell in ["bash", "zsh", "fish"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("bootfactory"), "{shell}");
        assert!(
            script.contains("doctor"),
            "{shell}: subcommands are completed"
        );
    }
    if !support::tools::have("bash") {
        eprintln!("skipped the bash checks: no bash");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bootfactory.bash");
    let out = bin().args(["completions", "bash"]).output().unwrap();
    std::fs::write(&file, &out.stdout).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(syntax.status.success(), "bash -n: {syntax:?}");
    // Sourced, it registers a completion function, and completing `bootfactory m` offers
    // `mirror` and `machine` (clap_complete's bash script offers hidden commands too).
    let probe = format!(
        "source {}; complete -p bootfactory; COMP_WORDS=(bootfactory m); COMP_CWORD=1; COMP_LINE='bootfactory m'; COMP_POINT=13; \
         f=$(complete -p bootfactory | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p'); \"$f\" bootfactory m bootfactory; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("-F _bootfactory bootfactory"), "{stdout}");
    let replies: Vec<&str> = stdout.lines().skip(1).collect();
    assert!(
        replies.contains(&"mirror") && replies.contains(&"machine"),
        "{stdout}"
    );
}

#[test]
fn man_pages_are_written_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    pages.sort();
    for p in [
        "bootfactory.1",
        "bootfactory-doctor.1",
        "bootfactory-completions.1",
        "bootfactory-mirror-pull.1",
        "bootfactory-store-verify.1",
    ] {
        assert!(pages.contains(&p.to_string()), "{p} missing: {pages:?}");
    }
    assert!(
        !pages
            .iter()
            .any(|p| p == "bootfactory-man.1" || p == "bootfactory-machines.1"),
        "{pages:?}"
    );
    if !support::tools::have("man") {
        eprintln!("skipped rendering: no man");
        return;
    }
    let rendered = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("bootfactory-doctor.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(rendered.status.success(), "{rendered:?}");
    assert!(
        text.contains("--json") && text.contains("Check this box"),
        "{text}"
    );
}

/// `bootfactory completions SHELL | head -c …` (a reader that goes away) ends quietly, and
/// a stdout that cannot be written (`> /dev/full`) is an error message: neither is a panic.
#[test]
fn completions_into_a_closed_pipe_or_a_full_disk_do_not_panic() {
    for shell in ["bash", "zsh", "fish"] {
        let mut child = bin()
            .args(["completions", shell])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before anything is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{shell}: {err}");
        assert_eq!(out.status.code(), Some(0), "{shell}: {err}");
    }
    if std::path::Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = bin()
            .args(["completions", "bash"])
            .stdout(full)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("completion"), "{err}");
    }
}
