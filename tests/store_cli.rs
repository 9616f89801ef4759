//! `bootfactory store gc|verify` as a user runs them, on a data directory filled through the
//! library: what gc deletes and keeps, that `--dry-run` deletes nothing, that verify reports
//! corruption with a non-zero exit, and that with a server running they go through its admin
//! socket (or refuse when they cannot).

mod support;

use support::output_text as text;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bootfactory::schematic::{SchematicStore, parse};
use bootfactory::store::{Digest, Store};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bootfactory"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c
}

fn store_cmd(data: &Path, args: &[&str]) -> Output {
    bin()
        .arg("store")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

fn blob_file(data: &Path, d: &Digest) -> PathBuf {
    data.join("blobs/sha256").join(d.hex())
}

/// What a filled data directory holds.
struct Filled {
    /// Named by a ref.
    referenced: Digest,
    /// Reachable only as a child of `referenced`.
    child: Digest,
    /// A schematic (kept by its ref).
    schematic: Digest,
    /// Nothing refers to it: 12 bytes.
    unreferenced: Digest,
}

/// Fills `data` through the library and closes the store.
async fn fill(data: &Path) -> Filled {
    let store = Store::open(data).unwrap();
    let referenced = store.put_bytes(b"a manifest").await.unwrap();
    let child = store.put_bytes(b"one of its layers").await.unwrap();
    store.set_children(&referenced, &[child]).unwrap();
    store.set_ref("test", "image", &referenced).unwrap();
    let schematics = SchematicStore::new(store.clone());
    let (id, _) = schematics
        .put(&parse(b"customization: {extraKernelArgs: [console=ttyS0]}").unwrap())
        .await
        .unwrap();
    let schematic = store.get_ref("schematic", id.as_str()).unwrap().unwrap();
    let unreferenced = store.put_bytes(b"unreferenced").await.unwrap();
    store.flush().await.unwrap();
    Filled {
        referenced,
        child,
        schematic,
        unreferenced,
    }
}

#[tokio::test]
async fn gc_reclaims_unreferenced_blobs_and_keeps_referenced_ones() {
    let data = tempfile::tempdir().unwrap();
    let f = fill(data.path()).await;
    let all = [f.referenced, f.child, f.schematic, f.unreferenced];
    for d in &all {
        assert!(blob_file(data.path(), d).exists());
    }

    let out = store_cmd(data.path(), &["gc", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("would remove 1 blobs, reclaiming 12 B (12 bytes)"),
        "{stdout}"
    );
    assert!(stdout.contains("nothing deleted"), "{stdout}");
    for d in &all {
        assert!(blob_file(data.path(), d).exists(), "--dry-run deleted {d}");
    }

    let out = store_cmd(data.path(), &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("removed 1 blobs, reclaimed 12 B (12 bytes)"),
        "{stdout}"
    );
    assert!(stdout.contains("store holds 3 blobs"), "{stdout}");
    assert!(!blob_file(data.path(), &f.unreferenced).exists());
    for d in [f.referenced, f.child, f.schematic] {
        assert!(blob_file(data.path(), &d).exists(), "gc deleted {d}");
    }
    let store = Store::open(data.path()).unwrap();
    assert!(!store.contains(&f.unreferenced));
    assert!(store.contains(&f.referenced) && store.contains(&f.child));
    drop(store);

    // Nothing left to collect; verify is clean.
    let out = store_cmd(data.path(), &["gc"]);
    assert!(text(&out).contains("removed 0 blobs"), "{}", text(&out));
    let out = store_cmd(data.path(), &["verify"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test]
async fn verify_reports_corrupt_blobs_and_exits_non_zero() {
    let data = tempfile::tempdir().unwrap();
    let f = fill(data.path()).await;
    let out = store_cmd(data.path(), &["verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("checked 4 blobs"), "{stdout}");
    let bytes: u64 = [
        "a manifest".len(),
        "one of its layers".len(),
        "unreferenced".len(),
    ]
    .iter()
    .map(|n| *n as u64)
    .sum::<u64>()
        + std::fs::metadata(blob_file(data.path(), &f.schematic))
            .unwrap()
            .len();
    assert!(
        stdout.contains(&format!("({bytes} bytes) hashed")),
        "{stdout}"
    );

    let path = blob_file(data.path(), &f.child);
    std::fs::write(&path, b"one of its layerz").unwrap();
    let out = store_cmd(data.path(), &["verify"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("corrupt: {}", f.child)),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 corrupt (quarantined)"),
        "{}",
        text(&out)
    );
    assert!(!path.exists(), "the corrupt blob is quarantined");
}

#[tokio::test]
async fn store_commands_go_through_a_running_server_or_refuse() {
    let data = tempfile::tempdir().unwrap();
    let f = fill(data.path()).await;
    let port = support::tools::free_port();
    let mut server = bin()
        .args(["serve", "--offline", "--http-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = server.try_wait().unwrap() {
            panic!("server exited: {status}");
        }
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The running service answers on its admin socket: the commands go through it, and its
    // GC keeps what is younger than its grace period (the blob a moment ago unreferenced).
    for args in [&["gc"][..], &["gc", "--dry-run"], &["verify"], &["usage"]] {
        let out = store_cmd(data.path(), args);
        assert!(out.status.success(), "store {args:?}: {}", text(&out));
    }
    let out = store_cmd(data.path(), &["gc", "--dry-run"]);
    assert!(
        text(&out).contains("younger than the grace period"),
        "{}",
        text(&out)
    );
    assert!(blob_file(data.path(), &f.unreferenced).exists());
    // Rebuilding the index needs the data directory to itself.
    let out = store_cmd(data.path(), &["verify", "--rebuild-index"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("stop it first"), "{}", text(&out));
    // Without the socket the commands cannot open the store the server holds.
    for args in [&["gc"][..], &["verify"]] {
        let out = bin()
            .arg("store")
            .args(args)
            .arg("--data-dir")
            .arg(data.path())
            .args(["--api-socket", ""])
            .output()
            .unwrap();
        assert!(!out.status.success(), "store {args:?} ran: {}", text(&out));
        assert!(text(&out).contains("stop it first"), "{}", text(&out));
    }
    assert!(blob_file(data.path(), &f.unreferenced).exists());

    server.kill().unwrap();
    server.wait().unwrap();
    let out = store_cmd(data.path(), &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!blob_file(data.path(), &f.unreferenced).exists());
}
