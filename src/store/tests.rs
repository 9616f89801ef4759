//! Tests of the content-addressed store.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::index::FileStamp;
use super::*;

const HOUR: Duration = Duration::from_secs(3600);

impl Inner {
    /// Makes `d` look as if it had been put `age` ago.
    fn backdate(&self, d: &Digest, age: Duration) {
        let _s = self.stripe(d);
        let mut rec = self.record(d).unwrap().expect("record to backdate");
        rec.touched_ms -= age.as_millis() as u64;
        rec.created -= age.as_secs();
        self.write_record(d, &rec).unwrap();
    }
}

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn blob_file(dir: &Path, d: &Digest) -> std::path::PathBuf {
    dir.join("blobs").join("sha256").join(d.hex())
}

/// Deterministic pseudo-random content.
fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// An AsyncRead that hands out at most `chunk` bytes per read and can fail
/// after `fail_after` bytes.
struct Chunky {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    fail_after: Option<usize>,
}

impl Chunky {
    fn new(data: Vec<u8>, chunk: usize) -> Self {
        Chunky {
            data,
            pos: 0,
            chunk,
            fail_after: None,
        }
    }
}

impl AsyncRead for Chunky {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(limit) = self.fail_after
            && self.pos >= limit
        {
            return Poll::Ready(Err(std::io::Error::other("upstream went away")));
        }
        let end = (self.pos + self.chunk)
            .min(self.data.len())
            .min(self.pos + buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..end]);
        self.pos = end;
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------- digest

#[test]
fn digest_string_forms() {
    let d = Digest::of_bytes(b"hello");
    let hex = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    assert_eq!(d.hex(), hex);
    assert_eq!(d.to_string(), format!("sha256:{hex}"));
    assert_eq!(format!("sha256:{hex}").parse::<Digest>().unwrap(), d);
    assert_eq!(Digest::from_hex(hex).unwrap(), d);
    assert_eq!(
        serde_json::to_string(&d).unwrap(),
        format!("\"sha256:{hex}\"")
    );
    assert_eq!(
        serde_json::from_str::<Digest>(&format!("\"sha256:{hex}\"")).unwrap(),
        d
    );

    for bad in [
        hex.to_string(),                          // no prefix
        format!("sha512:{hex}"),                  // other algorithm
        format!("sha256:{}", hex.to_uppercase()), // uppercase
        format!("sha256:{}", &hex[..63]),         // short
        format!("sha256:{hex}0"),                 // long
        format!("sha256:{}g", &hex[..63]),        // not hex
        String::new(),
    ] {
        assert!(bad.parse::<Digest>().is_err(), "{bad:?} parsed");
    }
    assert!(serde_json::from_str::<Digest>("\"sha256:abc\"").is_err());
    assert!(Digest::from_hex(&hex[..10]).is_err());
}

proptest! {
    #[test]
    fn digest_roundtrips(bytes in any::<[u8; 32]>()) {
        let d = Digest::from_bytes(bytes);
        prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        prop_assert_eq!(Digest::from_hex(&d.hex()).unwrap(), d);
        let json = serde_json::to_string(&d).unwrap();
        prop_assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        prop_assert_eq!(d.as_bytes(), &bytes);
    }
}

// ---------------------------------------------------------------- writes

#[tokio::test]
async fn put_bytes_round_trip() {
    let (dir, store) = new_store();
    let data = b"hello, store".to_vec();
    let d = store.put_bytes(&data).await.unwrap();
    assert_eq!(d, Digest::of_bytes(&data));
    assert!(store.contains(&d));
    assert_eq!(fs::read(blob_file(dir.path(), &d)).unwrap(), data);
    assert_eq!(store.read_bytes(&d).await.unwrap(), data);
    let info = store.stat(&d).unwrap();
    assert_eq!(info.digest, d);
    assert_eq!(info.size, data.len() as u64);
    assert!(!info.pinned);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(info.created <= now && info.created + 60 >= now);
    assert_eq!(store.total_size(), data.len() as u64);
    assert!(entries(&dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn put_stream_round_trip() {
    let (dir, store) = new_store();
    let data = content(1_000_003, 1);
    let d = store
        .put_stream(Chunky::new(data.clone(), 7_919))
        .await
        .unwrap();
    assert_eq!(d, Digest::of_bytes(&data));

    let mut blob = store.open_blob(&d).await.unwrap();
    assert_eq!(blob.digest, d);
    assert_eq!(blob.size, data.len() as u64);
    assert_eq!(blob.path, blob_file(dir.path(), &d));
    let mut back = Vec::new();
    blob.file.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, data);

    let path = store.blob_path(&d).await.unwrap();
    assert_eq!(fs::read(path).unwrap(), data);
    assert_eq!(store.total_size(), data.len() as u64);

    // Empty content is a valid blob too.
    let e = store.put_stream(&b""[..]).await.unwrap();
    assert_eq!(e, Digest::of_bytes(b""));
    assert_eq!(store.read_bytes(&e).await.unwrap(), Vec::<u8>::new());
    assert_eq!(store.list_blobs().unwrap().len(), 2);
}

#[tokio::test]
async fn put_file_moves_the_file_into_the_store() {
    use std::os::unix::fs::PermissionsExt as _;
    let (dir, store) = new_store();
    let data = content(700_001, 3);
    let src = dir.path().join("build-output");
    fs::write(&src, &data).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
    let d = store.put_file(&src).await.unwrap();
    assert_eq!(d, Digest::of_bytes(&data));
    assert!(!src.exists(), "the file is moved, not copied");
    let stored = blob_file(dir.path(), &d);
    assert_eq!(fs::read(&stored).unwrap(), data);
    assert_eq!(
        fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(store.read_bytes(&d).await.unwrap(), data);
    assert_eq!(store.total_size(), data.len() as u64);
    assert!(entries(&dir.path().join("tmp")).is_empty());
    // The same content again: the stored blob is kept, the new file removed.
    fs::write(&src, &data).unwrap();
    assert_eq!(store.put_file(&src).await.unwrap(), d);
    assert!(!src.exists());
    assert_eq!(store.list_blobs().unwrap().len(), 1);
    assert!(entries(&dir.path().join("tmp")).is_empty());
    // A missing file is an error and leaves nothing behind.
    assert!(store.put_file(&dir.path().join("missing")).await.is_err());
    assert!(entries(&dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn put_stream_expect_match_and_mismatch() {
    let (dir, store) = new_store();
    let data = content(300_000, 2);
    let right = Digest::of_bytes(&data);
    let wrong = Digest::of_bytes(b"something else");

    let err = store
        .put_stream_expect(Chunky::new(data.clone(), 10_000), &wrong)
        .await
        .unwrap_err();
    match err {
        StoreError::DigestMismatch { expected, actual } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, right);
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(!store.contains(&right));
    assert!(!store.contains(&wrong));
    assert!(store.list_blobs().unwrap().is_empty());
    assert_eq!(store.total_size(), 0);
    assert!(entries(&dir.path().join("blobs/sha256")).is_empty());
    assert!(entries(&dir.path().join("tmp")).is_empty());
    assert!(matches!(
        store.open_blob(&right).await,
        Err(StoreError::NotFound(d)) if d == right
    ));

    let got = store
        .put_stream_expect(Chunky::new(data.clone(), 10_000), &right)
        .await
        .unwrap();
    assert_eq!(got, right);
    assert_eq!(store.read_bytes(&right).await.unwrap(), data);
}

#[tokio::test]
async fn failing_stream_stores_nothing() {
    let (dir, store) = new_store();
    let mut r = Chunky::new(content(100_000, 3), 1000);
    r.fail_after = Some(50_000);
    let err = store.put_stream(r).await.unwrap_err();
    assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    assert!(entries(&dir.path().join("tmp")).is_empty());
    assert!(entries(&dir.path().join("blobs/sha256")).is_empty());
    assert!(store.list_blobs().unwrap().is_empty());
}

#[tokio::test]
async fn writer_round_trip() {
    let (dir, store) = new_store();
    let data = content(700_001, 4);
    let s2 = store.clone();
    let d2 = data.clone();
    let d = tokio::task::spawn_blocking(move || {
        let mut w = s2.writer().unwrap();
        for piece in d2.chunks(4097) {
            w.write_all(piece).unwrap();
        }
        assert_eq!(w.size(), d2.len() as u64);
        w.commit()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(d, Digest::of_bytes(&data));
    assert_eq!(store.read_bytes(&d).await.unwrap(), data);
    assert_eq!(store.total_size(), data.len() as u64);
    assert!(entries(&dir.path().join("tmp")).is_empty());

    // commit_expect with the right and a wrong digest.
    let mut w = store.writer().unwrap();
    w.write_all(b"abc").unwrap();
    assert_eq!(
        w.commit_expect(&Digest::of_bytes(b"abc")).unwrap(),
        Digest::of_bytes(b"abc")
    );
    let mut w = store.writer().unwrap();
    w.write_all(b"xyz").unwrap();
    let err = w.commit_expect(&Digest::of_bytes(b"abc")).unwrap_err();
    assert!(
        matches!(err, StoreError::DigestMismatch { actual, .. } if actual == Digest::of_bytes(b"xyz"))
    );
    assert!(!store.contains(&Digest::of_bytes(b"xyz")));
    assert!(entries(&dir.path().join("tmp")).is_empty());
    assert_eq!(store.list_blobs().unwrap().len(), 2);
}

#[tokio::test]
async fn dropped_writer_removes_temp() {
    let (dir, store) = new_store();
    let mut w = store.writer().unwrap();
    w.write_all(&content(10_000, 5)).unwrap();
    w.flush().unwrap();
    assert_eq!(entries(&dir.path().join("tmp")).len(), 1);
    drop(w);
    assert!(entries(&dir.path().join("tmp")).is_empty());
    assert!(store.list_blobs().unwrap().is_empty());
}

#[tokio::test]
async fn idempotent_puts() {
    let (dir, store) = new_store();
    let data = content(123_456, 6);
    let d1 = store.put_bytes(&data).await.unwrap();
    store.inner.backdate(&d1, HOUR);
    let created = store.stat(&d1).unwrap().created;
    let d2 = store.put_stream(&data[..]).await.unwrap();
    let mut w = store.writer().unwrap();
    w.write_all(&data).unwrap();
    let d3 = w.commit().unwrap();
    assert_eq!(d1, d2);
    assert_eq!(d1, d3);
    assert_eq!(entries(&dir.path().join("blobs/sha256")), vec![d1.hex()]);
    assert!(entries(&dir.path().join("tmp")).is_empty());
    assert_eq!(store.list_blobs().unwrap().len(), 1);
    assert_eq!(store.total_size(), data.len() as u64);
    // `created` is kept, but the re-put restarted the GC grace period.
    assert_eq!(store.stat(&d1).unwrap().created, created);
    assert_eq!(store.gc(Duration::from_secs(60)).unwrap().removed, 0);
    assert!(store.contains(&d1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_same_content() {
    let (dir, store) = new_store();
    let data = std::sync::Arc::new(content(5 * 1024 * 1024, 7));
    let expected = Digest::of_bytes(&data);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                store
                    .put_stream(Chunky::new(data.to_vec(), 64 * 1024 + i))
                    .await
            } else {
                store.put_bytes(&data).await
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), expected);
    }
    assert_eq!(
        entries(&dir.path().join("blobs/sha256")),
        vec![expected.hex()]
    );
    assert!(entries(&dir.path().join("tmp")).is_empty());
    let blobs = store.list_blobs().unwrap();
    assert_eq!(blobs.len(), 1);
    assert_eq!(blobs[0].digest, expected);
    assert_eq!(store.total_size(), data.len() as u64);
    assert_eq!(store.read_bytes(&expected).await.unwrap(), *data);
}

#[tokio::test]
async fn crash_between_write_and_rename() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(200_000, 8);
    {
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write_all(&data).unwrap();
        w.flush().unwrap();
        std::mem::forget(w); // no cleanup runs, as in a crash
        assert_eq!(entries(&dir.path().join("tmp")).len(), 1);
    }
    let store = Store::open(dir.path()).unwrap();
    assert!(entries(&dir.path().join("tmp")).is_empty());
    assert!(entries(&dir.path().join("blobs/sha256")).is_empty());
    let d = Digest::of_bytes(&data);
    assert!(!store.contains(&d));
    assert!(store.stat(&d).is_none());
    assert!(store.list_blobs().unwrap().is_empty());
    assert_eq!(store.total_size(), 0);
    assert!(matches!(
        store.open_blob(&d).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b);
    {
        let store = Store::open(dir.path()).unwrap();
        a = store.put_bytes(b"aaa").await.unwrap();
        b = store.put_bytes(b"bbbbb").await.unwrap();
        store.set_ref("tag", "latest", &a).unwrap();
        store.pin(&b).unwrap();
        store.set_children(&a, &[b]).unwrap();
        store.flush().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.total_size(), 8);
    assert_eq!(store.get_ref("tag", "latest").unwrap(), Some(a));
    assert!(store.is_pinned(&b));
    assert_eq!(store.children(&a).unwrap(), vec![b]);
    assert_eq!(store.read_bytes(&b).await.unwrap(), b"bbbbb");
}

// ---------------------------------------------------------------- verification

#[tokio::test]
async fn corrupt_blob_is_quarantined() {
    let (dir, store) = new_store();
    let good = store.put_bytes(&content(10_000, 9)).await.unwrap();
    let data = content(20_000, 10);
    let d = store.put_bytes(&data).await.unwrap();
    assert_eq!(store.total_size(), 30_000);

    // Rewrite with different content of a different length.
    let bad = content(19_999, 11);
    fs::write(blob_file(dir.path(), &d), &bad).unwrap();

    match store.open_blob(&d).await {
        Err(StoreError::Corrupt { digest, actual }) => {
            assert_eq!(digest, d);
            assert_eq!(actual, Digest::of_bytes(&bad));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let q = entries(&dir.path().join("quarantine"));
    assert_eq!(q.len(), 1);
    assert!(q[0].starts_with(&d.hex()), "{q:?}");
    assert_eq!(
        fs::read(dir.path().join("quarantine").join(&q[0])).unwrap(),
        bad
    );
    assert!(!blob_file(dir.path(), &d).exists());
    assert!(!store.contains(&d));
    assert_eq!(store.total_size(), 10_000);
    assert_eq!(store.list_blobs().unwrap().len(), 1);

    // Never served again, by any read path.
    assert!(matches!(
        store.open_blob(&d).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.blob_path(&d).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.read_bytes(&d).await,
        Err(StoreError::NotFound(_))
    ));
    // The other blob is unaffected.
    assert!(store.read_bytes(&good).await.is_ok());

    // Re-putting the real content heals it.
    assert_eq!(store.put_bytes(&data).await.unwrap(), d);
    assert_eq!(store.read_bytes(&d).await.unwrap(), data);
    assert_eq!(store.total_size(), 30_000);
}

#[tokio::test]
async fn same_length_corruption_is_caught_by_stamp() {
    let (dir, store) = new_store();
    let data = content(4096, 12);
    let d = store.put_bytes(&data).await.unwrap();
    let path = blob_file(dir.path(), &d);

    let mut bad = data.clone();
    bad[100] ^= 0xff;
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    (&f).write_all(&bad).unwrap();
    // Make the change visible regardless of timestamp granularity.
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
    drop(f);

    match store.blob_path(&d).await {
        Err(StoreError::Corrupt { digest, actual }) => {
            assert_eq!(digest, d);
            assert_eq!(actual, Digest::of_bytes(&bad));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(entries(&dir.path().join("quarantine")).len(), 1);
    assert_eq!(store.total_size(), 0);
    assert!(matches!(
        store.read_bytes(&d).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn touched_but_intact_blob_is_served_and_restamped() {
    let (dir, store) = new_store();
    let data = content(50_000, 13);
    let d = store.put_bytes(&data).await.unwrap();
    let path = blob_file(dir.path(), &d);
    let old = store.inner.record(&d).unwrap().unwrap().stamp;

    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000))
        .unwrap();
    drop(f);
    let now = FileStamp::of(&fs::metadata(&path).unwrap());
    assert_ne!(now, old);

    let mut blob = store.open_blob(&d).await.unwrap();
    let mut back = Vec::new();
    blob.file.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, data);
    assert_eq!(store.inner.record(&d).unwrap().unwrap().stamp, now);
    assert!(entries(&dir.path().join("quarantine")).is_empty());
    assert_eq!(store.total_size(), 50_000);
}

#[tokio::test]
async fn read_bytes_catches_corruption_with_intact_stamp() {
    let (dir, store) = new_store();
    let data = content(1000, 14);
    let d = store.put_bytes(&data).await.unwrap();
    let path = blob_file(dir.path(), &d);
    let mut bad = data.clone();
    bad[0] ^= 1;
    fs::write(&path, &bad).unwrap();
    // Simulate corruption the stamp cannot see (e.g. media bit rot).
    {
        let _s = store.inner.stripe(&d);
        let mut rec = store.inner.record(&d).unwrap().unwrap();
        rec.stamp = FileStamp::of(&fs::metadata(&path).unwrap());
        store.inner.write_record(&d, &rec).unwrap();
    }
    assert!(matches!(
        store.read_bytes(&d).await,
        Err(StoreError::Corrupt { actual, .. }) if actual == Digest::of_bytes(&bad)
    ));
    assert!(!store.contains(&d));
    assert_eq!(entries(&dir.path().join("quarantine")).len(), 1);
}

#[tokio::test]
async fn deleted_blob_file_is_not_found() {
    let (dir, store) = new_store();
    let keep = store.put_bytes(b"keep").await.unwrap();
    let d = store.put_bytes(b"gone soon").await.unwrap();
    fs::remove_file(blob_file(dir.path(), &d)).unwrap();
    assert!(matches!(store.open_blob(&d).await, Err(StoreError::NotFound(x)) if x == d));
    assert!(!store.contains(&d));
    assert_eq!(store.total_size(), 4);
    assert!(matches!(
        store.blob_path(&d).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(entries(&dir.path().join("quarantine")).is_empty());
    assert_eq!(store.read_bytes(&keep).await.unwrap(), b"keep");
}

#[tokio::test]
async fn verify_all_finds_corruption() {
    let (dir, store) = new_store();
    let good = store.put_bytes(&content(5000, 15)).await.unwrap();
    let loud = store.put_bytes(&content(6000, 16)).await.unwrap();
    let silent_data = content(7000, 17);
    let silent = store.put_bytes(&silent_data).await.unwrap();
    let missing = store.put_bytes(&content(8000, 18)).await.unwrap();
    assert_eq!(store.total_size(), 26_000);

    let loud_bad = content(10, 19);
    fs::write(blob_file(dir.path(), &loud), &loud_bad).unwrap();
    let mut silent_bad = silent_data.clone();
    silent_bad[6999] ^= 0x80;
    let sp = blob_file(dir.path(), &silent);
    fs::write(&sp, &silent_bad).unwrap();
    {
        let _s = store.inner.stripe(&silent);
        let mut rec = store.inner.record(&silent).unwrap().unwrap();
        rec.stamp = FileStamp::of(&fs::metadata(&sp).unwrap());
        store.inner.write_record(&silent, &rec).unwrap();
    }
    fs::remove_file(blob_file(dir.path(), &missing)).unwrap();

    let report = store.verify_all().await.unwrap();
    assert_eq!(report.checked, 4);
    assert_eq!(report.ok, 1);
    assert_eq!(report.bytes_hashed, 5000);
    let mut corrupt = report.corrupt.clone();
    corrupt.sort_by_key(|c| c.digest);
    let mut want = vec![
        CorruptBlob {
            digest: loud,
            actual: Digest::of_bytes(&loud_bad),
        },
        CorruptBlob {
            digest: silent,
            actual: Digest::of_bytes(&silent_bad),
        },
    ];
    want.sort_by_key(|c| c.digest);
    assert_eq!(corrupt, want);
    assert_eq!(report.missing, vec![missing]);
    assert!(report.errors.is_empty());

    assert_eq!(entries(&dir.path().join("quarantine")).len(), 2);
    let left: Vec<Digest> = store
        .list_blobs()
        .unwrap()
        .iter()
        .map(|b| b.digest)
        .collect();
    assert_eq!(left, vec![good]);
    assert_eq!(store.total_size(), 5000);

    let again = store.verify_all().await.unwrap();
    assert_eq!((again.checked, again.ok), (1, 1));
    assert!(again.corrupt.is_empty() && again.missing.is_empty());
}

// ---------------------------------------------------------------- pins & refs

#[tokio::test]
async fn pin_unpin() {
    let (_dir, store) = new_store();
    let d = store.put_bytes(b"pinned").await.unwrap();
    store.inner.backdate(&d, HOUR);
    assert!(!store.is_pinned(&d));
    store.pin(&d).unwrap();
    assert!(store.is_pinned(&d));
    assert!(store.stat(&d).unwrap().pinned);
    assert!(store.list_blobs().unwrap()[0].pinned);
    assert_eq!(store.gc(Duration::ZERO).unwrap().removed, 0);
    assert!(store.contains(&d));

    store.unpin(&d).unwrap();
    assert!(!store.is_pinned(&d));
    assert!(!store.stat(&d).unwrap().pinned);
    store.unpin(&d).unwrap(); // idempotent
    let r = store.gc(Duration::ZERO).unwrap();
    assert_eq!(r.removed, 1);
    assert!(!store.contains(&d));

    let unknown = Digest::of_bytes(b"never stored");
    assert!(matches!(store.pin(&unknown), Err(StoreError::NotFound(x)) if x == unknown));
    assert!(!store.is_pinned(&unknown));
}

#[tokio::test]
async fn refs_set_get_delete_list() {
    let (_dir, store) = new_store();
    let a = store.put_bytes(b"a").await.unwrap();
    let b = store.put_bytes(b"b").await.unwrap();

    assert_eq!(store.get_ref("tag", "x").unwrap(), None);
    assert_eq!(store.set_ref("tag", "x", &a).unwrap(), None);
    assert_eq!(store.get_ref("tag", "x").unwrap(), Some(a));
    assert_eq!(store.set_ref("tag", "x", &b).unwrap(), Some(a));
    assert_eq!(store.get_ref("tag", "x").unwrap(), Some(b));
    assert_eq!(store.set_ref("tag", "repo/name:v1", &a).unwrap(), None);
    assert_eq!(store.set_ref("tag", "a", &a).unwrap(), None);
    assert_eq!(store.set_ref("tags", "z", &a).unwrap(), None);
    assert_eq!(store.set_ref("ta", "g/y", &a).unwrap(), None);

    assert_eq!(
        store.list_refs("tag").unwrap(),
        vec![
            ("a".to_string(), a),
            ("repo/name:v1".to_string(), a),
            ("x".to_string(), b)
        ]
    );
    assert_eq!(store.list_refs("tags").unwrap(), vec![("z".to_string(), a)]);
    assert_eq!(store.list_refs("ta").unwrap(), vec![("g/y".to_string(), a)]);
    assert!(store.list_refs("nothing").unwrap().is_empty());

    assert_eq!(store.delete_ref("tag", "x").unwrap(), Some(b));
    assert_eq!(store.delete_ref("tag", "x").unwrap(), None);
    assert_eq!(store.get_ref("tag", "x").unwrap(), None);
    assert_eq!(store.list_refs("tag").unwrap().len(), 2);

    // Validation.
    for (kind, key) in [
        ("", "k"),
        ("a/b", "k"),
        ("a\0", "k"),
        ("kind", ""),
        ("kind", "k\0"),
    ] {
        assert!(
            matches!(store.set_ref(kind, key, &a), Err(StoreError::InvalidRef(_))),
            "set_ref({kind:?}, {key:?})"
        );
        assert!(matches!(
            store.get_ref(kind, key),
            Err(StoreError::InvalidRef(_))
        ));
        assert!(matches!(
            store.delete_ref(kind, key),
            Err(StoreError::InvalidRef(_))
        ));
    }
    for kind in ["", "a/b", "x\0"] {
        assert!(matches!(
            store.list_refs(kind),
            Err(StoreError::InvalidRef(_))
        ));
    }
    // Refs must point at stored blobs.
    let unknown = Digest::of_bytes(b"unknown");
    assert!(matches!(
        store.set_ref("tag", "u", &unknown),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get_ref("tag", "u").unwrap(), None);
}

// ---------------------------------------------------------------- gc

#[tokio::test]
async fn gc_is_transitive_and_respects_grace() {
    let (dir, store) = new_store();
    let manifest = store.put_bytes(&content(100, 20)).await.unwrap();
    let index_child = store.put_bytes(&content(200, 21)).await.unwrap();
    let layer = store.put_bytes(&content(400, 22)).await.unwrap();
    let old_garbage = store.put_bytes(&content(800, 23)).await.unwrap();
    let young_garbage = store.put_bytes(&content(1600, 24)).await.unwrap();
    let young_parent = store.put_bytes(&content(3200, 25)).await.unwrap();
    let old_child_of_young = store.put_bytes(&content(6400, 26)).await.unwrap();
    for d in [
        manifest,
        index_child,
        layer,
        old_garbage,
        old_child_of_young,
    ] {
        store.inner.backdate(&d, 2 * HOUR);
    }
    store.set_ref("tag", "v1", &manifest).unwrap();
    store.set_children(&manifest, &[index_child]).unwrap();
    store.set_children(&index_child, &[layer]).unwrap();
    store
        .set_children(&young_parent, &[old_child_of_young])
        .unwrap();
    assert_eq!(store.children(&manifest).unwrap(), vec![index_child]);
    assert!(matches!(
        store.set_children(&Digest::of_bytes(b"nope"), &[layer]),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.total_size(), 12_700);

    let r = store.gc(HOUR).unwrap();
    assert_eq!(
        r,
        GcReport {
            removed: 1,
            freed_bytes: 800,
            orphans: 0,
            refs_dropped: 0,
        }
    );
    assert!(!store.contains(&old_garbage));
    assert!(!blob_file(dir.path(), &old_garbage).exists());
    for d in [
        manifest,
        index_child,
        layer,
        young_garbage,
        young_parent,
        old_child_of_young,
    ] {
        assert!(store.contains(&d), "{d} should survive");
    }
    assert_eq!(store.total_size(), 11_900);
    assert!(entries(&dir.path().join("tmp")).is_empty());

    // Drop the ref and age everything: the whole chain goes.
    assert_eq!(store.delete_ref("tag", "v1").unwrap(), Some(manifest));
    for d in [young_garbage, young_parent] {
        store.inner.backdate(&d, 2 * HOUR);
    }
    let r = store.gc(HOUR).unwrap();
    assert_eq!(r.removed, 6);
    assert_eq!(r.freed_bytes, 11_900);
    assert!(store.list_blobs().unwrap().is_empty());
    assert_eq!(store.total_size(), 0);
    assert!(entries(&dir.path().join("blobs/sha256")).is_empty());
    assert!(store.children(&manifest).unwrap().is_empty());
    assert!(store.inner.children.is_empty());
}

#[tokio::test]
async fn gc_grace_zero_removes_unreferenced_only() {
    let (_dir, store) = new_store();
    let kept = store.put_bytes(b"kept").await.unwrap();
    let gone = store.put_bytes(b"gone!").await.unwrap();
    store.set_ref("k", "v", &kept).unwrap();
    let planned = store.gc_dry_run(Duration::ZERO).unwrap();
    assert_eq!((planned.removed, planned.freed_bytes), (1, 5));
    assert!(store.contains(&gone), "a dry run deletes nothing");
    assert_eq!(store.total_size(), 9);
    let r = store.gc(Duration::ZERO).unwrap();
    assert_eq!((r.removed, r.freed_bytes), (1, 5));
    assert!(store.contains(&kept) && !store.contains(&gone));
    assert_eq!(store.total_size(), 4);
    // The ref keeps it across repeated runs.
    assert_eq!(store.gc(Duration::ZERO).unwrap().removed, 0);
}

#[tokio::test]
async fn gc_removes_old_orphan_files() {
    let (dir, store) = new_store();
    let old = content(300, 27);
    let young = content(500, 28);
    let old_d = Digest::of_bytes(&old);
    let young_d = Digest::of_bytes(&young);
    let old_path = blob_file(dir.path(), &old_d);
    fs::write(&old_path, &old).unwrap();
    fs::File::options()
        .write(true)
        .open(&old_path)
        .unwrap()
        .set_modified(SystemTime::now() - 2 * HOUR)
        .unwrap();
    fs::write(blob_file(dir.path(), &young_d), &young).unwrap();
    fs::write(dir.path().join("blobs/sha256/not-a-digest"), b"x").unwrap();

    let planned = store.gc_dry_run(HOUR).unwrap();
    assert!(old_path.exists(), "a dry run deletes nothing");
    let r = store.gc(HOUR).unwrap();
    assert_eq!(
        r,
        GcReport {
            removed: 1,
            freed_bytes: 300,
            orphans: 1,
            refs_dropped: 0,
        }
    );
    assert_eq!(planned, r, "the dry run reports what the real run does");
    assert!(!old_path.exists());
    assert!(blob_file(dir.path(), &young_d).exists());
    assert!(dir.path().join("blobs/sha256/not-a-digest").exists());

    // Putting the orphan's content adopts (replaces) the file.
    assert_eq!(store.put_bytes(&young).await.unwrap(), young_d);
    assert_eq!(store.total_size(), 500);
    assert_eq!(store.read_bytes(&young_d).await.unwrap(), young);
}

#[test]
fn no_space_is_a_distinct_error_naming_the_data_dir() {
    let dir = Path::new("/var/lib/bootfactory");
    let file = dir.join("tmp/x.tmp");
    for errno in [nix::libc::ENOSPC, nix::libc::EDQUOT] {
        let e = StoreError::from_write(
            dir,
            "write temp file",
            &file,
            std::io::Error::from_raw_os_error(errno),
        );
        assert!(e.is_no_space(), "{e:?}");
        assert_eq!(e.to_string(), "no space left on /var/lib/bootfactory");
        let source = std::error::Error::source(&e).expect("source kept");
        assert!(
            source
                .to_string()
                .contains("/var/lib/bootfactory/tmp/x.tmp")
        );
        assert!(caused_by_no_space(&e));
    }
    let other = StoreError::from_write(
        dir,
        "write temp file",
        &file,
        std::io::Error::from_raw_os_error(nix::libc::EIO),
    );
    assert!(matches!(other, StoreError::Io(_)), "{other:?}");
    assert!(!other.is_no_space());
    assert!(!caused_by_no_space(&other));
}

/// Pushes `data` into a fresh ingest in uneven chunks.
async fn ingest_chunks(store: &Store, data: &[u8]) -> Ingest {
    let mut ingest = store.ingest().unwrap();
    let mut at = 0;
    let mut step = 1;
    while at < data.len() {
        let end = (at + step).min(data.len());
        ingest
            .push(bytes::Bytes::copy_from_slice(&data[at..end]))
            .await
            .unwrap();
        ingest.drain_to_limit().await.unwrap();
        at = end;
        step = step * 3 + 7;
    }
    ingest
}

#[tokio::test]
async fn ingest_hashes_once_and_commits_only_a_match() {
    let (dir, store) = new_store();
    let data = content(3 << 20, 21);
    let expected = Digest::of_bytes(&data);

    let mut ingest = ingest_chunks(&store, &data).await;
    assert_eq!(ingest.size(), data.len() as u64);
    assert_eq!(
        ingest.finish().await.unwrap(),
        expected,
        "the content's digest"
    );
    assert_eq!(ingest.written(), data.len() as u64);
    assert!(
        ingest
            .push(bytes::Bytes::from_static(b"late"))
            .await
            .is_err()
    );
    let temp = ingest.temp_path().to_path_buf();
    let handle = ingest.read_handle();
    assert_eq!(ingest.commit_expect(&expected).await.unwrap(), expected);
    assert!(!temp.exists(), "renamed into the store");
    assert_eq!(store.read_bytes(&expected).await.unwrap(), data);
    // The read handle follows the file into the store.
    let mut first = [0u8; 16];
    std::os::unix::fs::FileExt::read_exact_at(&*handle, &mut first, 0).unwrap();
    assert_eq!(first, data[..16]);
    assert!(entries(&dir.path().join("tmp")).is_empty());

    // Other bytes than announced: refused, the temp file gone, nothing indexed.
    let mut wrong = content(1 << 20, 22);
    let wanted = Digest::of_bytes(&wrong);
    wrong[1000] ^= 1;
    let ingest = ingest_chunks(&store, &wrong).await;
    match ingest.commit_expect(&wanted).await {
        Err(StoreError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wanted);
            assert_eq!(actual, Digest::of_bytes(&wrong));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(!store.contains(&wanted));
    assert!(!store.contains(&Digest::of_bytes(&wrong)));
    assert!(!blob_file(dir.path(), &wanted).exists());
    assert!(entries(&dir.path().join("tmp")).is_empty());

    // A truncated body (the prefix of the right content) is refused the same way.
    let ingest = ingest_chunks(&store, &data[..data.len() - 1]).await;
    assert!(matches!(
        ingest.commit_expect(&expected).await,
        Err(StoreError::DigestMismatch { .. })
    ));
    assert!(entries(&dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn abandoned_ingests_leave_nothing() {
    let (dir, store) = new_store();
    let data = content(1 << 20, 23);
    let ingest = ingest_chunks(&store, &data).await;
    ingest.abort().await;
    assert!(entries(&dir.path().join("tmp")).is_empty());
    assert!(!store.contains(&Digest::of_bytes(&data)));

    // Dropped without a word (a cancelled download): the writer thread removes the file.
    let ingest = ingest_chunks(&store, &data).await;
    drop(ingest);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !entries(&dir.path().join("tmp")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "temp file left behind"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!store.contains(&Digest::of_bytes(&data)));
}

#[tokio::test]
async fn ingest_stops_at_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_quota(Quota {
        max_bytes: super::quota::CHECK_EVERY / 2,
        min_free_bytes: 0,
    });
    let mut ingest = store.ingest().unwrap();
    let chunk = bytes::Bytes::from(vec![5u8; 1 << 20]);
    let mut failure = None;
    for _ in 0..((2 * super::quota::CHECK_EVERY) >> 20) {
        if let Err(e) = ingest.push(chunk.clone()).await {
            failure = Some(e);
            break;
        }
        if let Err(e) = ingest.drain_to_limit().await {
            failure = Some(e);
            break;
        }
    }
    let e = match failure {
        Some(e) => e,
        None => ingest
            .commit_expect(&Digest::of_bytes(b"x"))
            .await
            .unwrap_err(),
    };
    assert!(e.is_no_space(), "{e:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !entries(&dir.path().join("tmp")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "temp file left behind"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
