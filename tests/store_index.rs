//! Issue 10, defect 7: deleting or replacing `index.sled` under a store must not silently
//! forget every schematic; `store verify --rebuild-index` recovers what the blobs allow.

use std::path::Path;
use std::process::Command;

use bootfactory::schematic::{SchematicStore, parse};
use bootfactory::store::{IndexProblem, Store, StoreError};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bootfactory"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c
}

/// A store holding one schematic and one other blob; returns the schematic's ID.
async fn populate(dir: &Path) -> String {
    let store = Store::open(dir).unwrap();
    let schematics = SchematicStore::new(store.clone());
    let s = parse(b"customization: {extraKernelArgs: [console=ttyS0]}").unwrap();
    let (id, new) = schematics.put(&s).await.unwrap();
    assert!(new);
    store.put_bytes(b"some other blob").await.unwrap();
    store.flush().await.unwrap();
    id.to_string()
}

fn problem(result: Result<Store, StoreError>) -> IndexProblem {
    match result {
        Err(StoreError::IndexProblem(p)) => p,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a store with a lost index opened"),
    }
}

#[tokio::test]
async fn deleted_index_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let id = populate(dir.path()).await;
    std::fs::remove_dir_all(dir.path().join("index.sled")).unwrap();

    let err = Store::open(dir.path()).expect_err("refused");
    assert!(
        err.to_string().contains("store verify --rebuild-index"),
        "{err}"
    );
    // Still refused the second time (the first attempt created an empty index.sled).
    assert_eq!(
        problem(Store::open(dir.path())),
        IndexProblem::Missing { blobs: 2 }
    );
    // The server refuses to start with a message naming the way out.
    let out = bin()
        .args([
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--offline",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--rebuild-index"), "{stderr}");

    let out = bin()
        .args(["store", "verify", "--rebuild-index", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("re-indexed 2 blobs"), "{stdout}");
    assert!(stdout.contains("recovered 1 schematics"), "{stdout}");

    let store = Store::open(dir.path()).expect("rebuilt index opens");
    let schematics = SchematicStore::new(store.clone());
    let got = schematics.get(&id.parse().unwrap()).await.unwrap();
    assert_eq!(got.expect("schematic recovered").id.to_string(), id);
    drop((store, schematics));
    // Plain verify is clean afterwards.
    let out = bin()
        .args(["store", "verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn index_of_another_store_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    populate(a.path()).await;
    populate(b.path()).await;
    std::fs::remove_dir_all(a.path().join("index.sled")).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(b.path().join("index.sled"))
        .arg(a.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(problem(Store::open(a.path())), IndexProblem::Replaced);
}

#[tokio::test]
async fn new_and_older_stores_open() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path()).await;
    // A store from before identities: no store-id file (the index's own id is kept and the
    // file rewritten), and a fresh empty directory gets an identity.
    std::fs::remove_file(dir.path().join("store-id")).unwrap();
    drop(Store::open(dir.path()).unwrap());
    assert!(dir.path().join("store-id").exists());
    drop(Store::open(dir.path()).unwrap());
}

/// Defect 7: outside systemd (umask 022) blobs and the index were created world-readable.
#[tokio::test]
async fn blobs_and_index_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    // The default umask of a login shell; the store must not rely on systemd's UMask=0077.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path()).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for d in ["blobs", "blobs/sha256", "tmp", "quarantine", "index.sled"] {
        assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
    }
    for entry in std::fs::read_dir(dir.path().join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    for entry in std::fs::read_dir(dir.path().join("index.sled")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}

/// Defect 6: the store refuses new content past `store.maxBytes` and below
/// `store.minFreeBytes`, with a message naming the limit; what is stored stays readable.
#[tokio::test]
async fn quotas_refuse_new_content_and_keep_the_old() {
    use bootfactory::store::Quota;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_quota(Quota {
        max_bytes: 1000,
        min_free_bytes: 0,
    });
    let kept = store.put_bytes(&[1u8; 600]).await.unwrap();
    // Over the limit at commit time: refused, and no temp file is left.
    let err = store.put_bytes(&[2u8; 600]).await.unwrap_err();
    assert!(err.is_no_space(), "{err}");
    let text = err.to_string();
    assert!(text.contains("store quota reached"), "{text}");
    assert!(text.contains("store.maxBytes is 1000"), "{text}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    // The same content again is not new: accepted.
    assert_eq!(store.put_bytes(&[1u8; 600]).await.unwrap(), kept);
    assert_eq!(store.read_bytes(&kept).await.unwrap(), vec![1u8; 600]);
    // The blocking writer refuses up front once the store is full.
    store.put_bytes(&[3u8; 400]).await.unwrap();
    assert!(store.writer().unwrap_err().is_no_space());

    // Content on its way in (a parent's download in a scratch file) counts before it is
    // whole: the store holds 1000 of 1000 bytes, so even one more byte is refused, and with
    // room for 100 more, 101 incoming bytes are.
    assert!(store.check_quota_for(1).unwrap_err().is_no_space());
    store.set_quota(Quota {
        max_bytes: 1100,
        min_free_bytes: 0,
    });
    store.check_quota_for(100).unwrap();
    assert!(store.check_quota_for(101).unwrap_err().is_no_space());

    // A free-space reserve larger than any filesystem refuses everything new.
    store.set_quota(Quota {
        max_bytes: 0,
        min_free_bytes: u64::MAX / 2,
    });
    let err = store.put_bytes(b"new").await.unwrap_err();
    assert!(err.to_string().contains("store.minFreeBytes"), "{err}");
}

/// Review finding: a huge stream stops at the limit, not at a full disk.
#[tokio::test]
async fn quota_stops_a_stream_in_progress() {
    use bootfactory::store::Quota;
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_quota(Quota {
        max_bytes: 10 << 20,
        min_free_bytes: 0,
    });
    let total: u64 = 512 << 20;
    let mut reader = tokio::io::repeat(7).take(total);
    let err = store.put_stream(&mut reader).await.unwrap_err();
    assert!(err.is_no_space(), "{err}");
    let read = total - reader.limit();
    assert!(read <= 65 << 20, "read {read} bytes of a refused stream");
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
