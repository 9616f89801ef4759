//! The retention policy on a hand-made store: three Talos versions, each an imager image (a
//! layer of its own and one layer every version shares) and built assets.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::oci::media;

const VERSIONS: [&str; 3] = ["v1.9.0", "v1.10.0", "v1.11.0"];
const OWN_LAYER: usize = 10_000;
const SHARED_LAYER: usize = 3_000;
const ASSET: usize = 2_000;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    retention: Retention,
    /// Per version: its own layer.
    own_layer: Vec<Digest>,
    shared_layer: Digest,
    /// Per version: its kernel asset's blob.
    assets: Vec<Digest>,
}

fn manifest(config: &Digest, layers: &[(Digest, usize)]) -> Vec<u8> {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, n)| {
            format!(
                r#"{{"mediaType":"{}","digest":"{d}","size":{n}}}"#,
                media::OCI_LAYER_GZIP
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{config}","size":2}},"layers":[{}]}}"#,
        media::OCI_MANIFEST,
        media::OCI_CONFIG,
        layers.join(",")
    )
    .into_bytes()
}

fn kernel_key(v: &str) -> String {
    format!("bf1/Kernel/{v}/metal/amd64/-/-")
}

fn initramfs_key(v: &str, schematic: &str) -> String {
    format!("bf1/Initramfs/{v}/metal/amd64/-/{schematic}")
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let catalog = ImageCatalog::new(store.clone()).unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let imager = config
        .artifacts
        .core
        .image_name(&config.artifacts.core.components.imager)
        .unwrap();
    let shared_layer = store.put_bytes(&vec![7u8; SHARED_LAYER]).await.unwrap();
    let mut own_layer = Vec::new();
    let mut assets = Vec::new();
    for (i, v) in VERSIONS.iter().enumerate() {
        let cfg = store
            .put_bytes(format!("{{}}{i}").as_bytes())
            .await
            .unwrap();
        let layer = store
            .put_bytes(&vec![i as u8 + 1; OWN_LAYER])
            .await
            .unwrap();
        let bytes = manifest(&cfg, &[(layer, OWN_LAYER), (shared_layer, SHARED_LAYER)]);
        let (d, _) = catalog.put_manifest(&imager, &bytes, None).await.unwrap();
        catalog.set_tag(&imager, v, &d).unwrap();
        let asset = store.put_bytes(&vec![100 + i as u8; ASSET]).await.unwrap();
        store.set_ref(ASSET_KIND, &kernel_key(v), &asset).unwrap();
        own_layer.push(layer);
        assets.push(asset);
    }
    let retention = Retention::new(Arc::new(config), catalog);
    Fixture {
        _dir: dir,
        store,
        retention,
        own_layer,
        shared_layer,
        assets,
    }
}

fn keep(n: usize) -> GcPolicy {
    GcPolicy {
        keep_versions: Some(n),
        keep_referenced: true,
        max_bytes: None,
    }
}

fn version(s: &str) -> TalosVersion {
    parse_user_version(s).unwrap()
}

fn plan_of(r: &GcRunReport) -> Vec<(String, bool, String)> {
    r.versions
        .iter()
        .map(|v| (v.usage.version.clone(), v.keep, v.reason.clone()))
        .collect()
}

#[tokio::test]
async fn keeping_two_versions_removes_the_oldest_and_a_dry_run_says_exactly_that() {
    let f = fixture().await;
    let none = Referenced::default();
    let dry = f
        .retention
        .run(keep(2), &none, true, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        plan_of(&dry),
        vec![
            ("v1.11.0".into(), true, "newest 2".into()),
            ("v1.10.0".into(), true, "newest 2".into()),
            ("v1.9.0".into(), false, "older than the newest 2".into()),
        ]
    );
    // The dry run changed nothing.
    for d in f.own_layer.iter().chain(&f.assets) {
        assert!(f.store.contains(d));
    }
    assert!(
        f.store
            .get_ref(ASSET_KIND, &kernel_key("v1.9.0"))
            .unwrap()
            .is_some()
    );
    // The oldest version's usage: its layer, config, manifest and asset; the shared layer
    // is not its alone.
    let old = &dry.versions[2].usage;
    assert_eq!(old.asset_bytes, ASSET as u64);
    assert!(old.release_bytes > (OWN_LAYER + SHARED_LAYER) as u64);
    assert_eq!(
        old.total_bytes - old.exclusive_bytes,
        SHARED_LAYER as u64,
        "{old:?}"
    );
    assert_eq!(old.images, 1);
    assert_eq!(old.assets, 1);
    assert_eq!(dry.freed_bytes, old.exclusive_bytes);

    let real = f
        .retention
        .run(keep(2), &none, false, Duration::ZERO)
        .await
        .unwrap();
    // Same numbers as the dry run.
    assert_eq!(plan_of(&real), plan_of(&dry));
    assert_eq!(real.blobs_removed, dry.blobs_removed);
    assert_eq!(real.freed_bytes, dry.freed_bytes);
    assert_eq!(real.refs_dropped, dry.refs_dropped);
    assert_eq!(real.bytes_after, dry.bytes_after);
    assert_eq!(real.blobs_after, dry.blobs_after);
    assert!(!real.dry_run && dry.dry_run);

    assert!(!f.store.contains(&f.own_layer[0]));
    assert!(!f.store.contains(&f.assets[0]));
    assert!(
        f.store
            .get_ref(ASSET_KIND, &kernel_key("v1.9.0"))
            .unwrap()
            .is_none()
    );
    for i in 1..3 {
        assert!(f.store.contains(&f.own_layer[i]));
        assert!(f.store.contains(&f.assets[i]));
    }
    assert!(f.store.contains(&f.shared_layer));
    // The store is consistent, and the version is gone from the usage.
    let verify = f.store.verify_all().await.unwrap();
    assert!(verify.corrupt.is_empty() && verify.missing.is_empty());
    let usage = f.retention.usage().await.unwrap();
    let listed: Vec<&str> = usage.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(listed, vec!["v1.11.0", "v1.10.0"]);
    // Running again removes nothing more.
    let again = f
        .retention
        .run(keep(2), &none, false, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((again.blobs_removed, again.refs_dropped), (0, 0));
}

#[tokio::test]
async fn an_assigned_version_is_kept_unless_keep_referenced_is_off() {
    let f = fixture().await;
    let referenced = Referenced {
        versions: BTreeSet::from([version("v1.9.0")]),
        pairs: BTreeSet::from([("a".repeat(64), version("v1.9.0"))]),
    };
    let r = f
        .retention
        .run(keep(1), &referenced, false, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        plan_of(&r),
        vec![
            ("v1.11.0".into(), true, "newest 1".into()),
            ("v1.10.0".into(), false, "older than the newest 1".into()),
            ("v1.9.0".into(), true, "assigned".into()),
        ]
    );
    assert!(f.store.contains(&f.own_layer[0]) && f.store.contains(&f.assets[0]));
    assert!(!f.store.contains(&f.own_layer[1]) && !f.store.contains(&f.assets[1]));

    let off = GcPolicy {
        keep_referenced: false,
        ..keep(1)
    };
    let r = f
        .retention
        .run(off, &referenced, false, Duration::ZERO)
        .await
        .unwrap();
    assert!(
        !r.versions
            .iter()
            .find(|v| v.usage.version == "v1.9.0")
            .unwrap()
            .keep
    );
    assert!(!f.store.contains(&f.own_layer[0]));
    assert!(f.store.contains(&f.own_layer[2]));
}

#[tokio::test]
async fn max_bytes_evicts_least_recently_used_assets_but_not_assigned_ones() {
    let f = fixture().await;
    let schematic = "b".repeat(64);
    // Three initramfs assets of v1.11.0: used an hour, a day and a week ago; the assigned
    // schematic's one is the oldest.
    let used = f.store.db().open_tree("factory/asset-used").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut blobs = Vec::new();
    for (i, (s, age)) in [
        ("c".repeat(64), 3600),
        ("d".repeat(64), 86_400),
        (schematic.clone(), 7 * 86_400),
    ]
    .iter()
    .enumerate()
    {
        let blob = f
            .store
            .put_bytes(&vec![200 + i as u8; 5_000])
            .await
            .unwrap();
        let key = initramfs_key("v1.11.0", s);
        f.store.set_ref(ASSET_KIND, &key, &blob).unwrap();
        used.insert(key.as_bytes(), &(now - age).to_be_bytes())
            .unwrap();
        blobs.push(blob);
    }
    let referenced = Referenced {
        versions: BTreeSet::from([version("v1.11.0")]),
        pairs: BTreeSet::from([(schematic.clone(), version("v1.11.0"))]),
    };
    let total = f.store.total_size();
    // Room for everything but about one 5,000-byte asset.
    let policy = GcPolicy {
        keep_versions: None,
        keep_referenced: true,
        max_bytes: Some(total - 4_000),
    };
    let dry = f
        .retention
        .run(policy, &referenced, true, Duration::ZERO)
        .await
        .unwrap();
    let names: Vec<&str> = dry.evicted.iter().map(|e| e.name.as_str()).collect();
    // The kernels have no use record: their put time (now) makes them the most recent.
    assert_eq!(
        names,
        vec![format!(
            "asset/{}",
            initramfs_key("v1.11.0", &"d".repeat(64))
        )],
        "{dry:?}"
    );
    assert_eq!(dry.evicted[0].bytes, 5_000);
    assert_eq!(dry.max_bytes_reached, Some(true));
    assert!(f.store.contains(&blobs[1]), "a dry run evicts nothing");
    let real = f
        .retention
        .run(policy, &referenced, false, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(real.evicted, dry.evicted);
    assert_eq!(real.freed_bytes, 5_000);
    assert!(!f.store.contains(&blobs[1]));
    assert!(f.store.contains(&blobs[0]) && f.store.contains(&blobs[2]));
    assert!(real.bytes_after <= total - 4_000);

    // A target below what may be evicted: every unprotected asset goes, the assigned one and
    // the release images stay, and the report says the target was missed.
    let tiny = GcPolicy {
        max_bytes: Some(1),
        ..policy
    };
    let r = f
        .retention
        .run(tiny, &referenced, false, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(r.max_bytes_reached, Some(false));
    assert!(
        r.notes.iter().any(|n| n.contains("is not reached")),
        "{:?}",
        r.notes
    );
    assert!(f.store.contains(&blobs[2]), "the assigned asset stays");
    assert!(
        f.store
            .get_ref(ASSET_KIND, &kernel_key("v1.11.0"))
            .unwrap()
            .is_some(),
        "an assigned version's kernel stays"
    );
    assert!(
        f.store
            .get_ref(ASSET_KIND, &kernel_key("v1.9.0"))
            .unwrap()
            .is_none()
    );
    assert!(
        f.store.contains(&f.own_layer[0]),
        "release images are never evicted"
    );
    assert!(!f.store.contains(&blobs[0]));
}

#[tokio::test]
async fn the_grace_period_keeps_fresh_content_and_gc_runs_one_at_a_time() {
    let f = fixture().await;
    let none = Referenced::default();
    let r = f
        .retention
        .run(keep(1), &none, false, Duration::from_secs(3600))
        .await
        .unwrap();
    // Refs go, but every blob is younger than the grace period, and the report says so.
    assert!(r.refs_dropped > 0);
    assert_eq!(r.blobs_removed, 0);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("younger than the grace period")),
        "{:?}",
        r.notes
    );
    // Size eviction never unnames an asset whose blob the grace period keeps anyway.
    let sized = GcPolicy {
        max_bytes: Some(1),
        ..keep(1)
    };
    let r = f
        .retention
        .run(sized, &none, true, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(r.evicted.is_empty(), "{:?}", r.evicted);
    assert_eq!(r.max_bytes_reached, Some(false));
    assert!(f.store.contains(&f.own_layer[0]));
    // A later run without grace sweeps them.
    let r = f
        .retention
        .run(keep(1), &none, false, Duration::ZERO)
        .await
        .unwrap();
    assert!(r.blobs_removed > 0);
    assert!(!f.store.contains(&f.own_layer[0]));

    let _held = f.retention.running.lock().await;
    assert!(matches!(
        f.retention
            .try_run(keep(1), &none, true, Duration::ZERO)
            .await,
        Err(RetentionError::Busy)
    ));
}

#[tokio::test]
async fn the_periodic_gc_applies_the_policy_with_the_assignments_and_waits_for_a_running_gc() {
    let f = fixture().await;
    let assignments = Assignments::open(&f.store, crate::config::UnassignedPolicy::Ignore).unwrap();
    let schematic = "e".repeat(64);
    assignments
        .set(
            "52:54:00:00:00:01".parse().unwrap(),
            &crate::assign::Assignment {
                schematic: schematic.clone(),
                version: "v1.9.0".into(),
                platform: "metal".into(),
                arch: None,
                extra_kernel_args: Vec::new(),
                labels: Default::default(),
                ip: None,
                hostname: None,
            },
        )
        .unwrap();
    let retention = Arc::new(f.retention);
    // A GC in progress: the periodic one skips its turns meanwhile.
    let held = retention.running.lock().await;
    let task = spawn_periodic(
        retention.clone(),
        assignments,
        keep(1),
        Duration::from_millis(100),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        f.store
            .get_ref(ASSET_KIND, &kernel_key("v1.10.0"))
            .unwrap()
            .is_some()
    );
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while f
        .store
        .get_ref(ASSET_KIND, &kernel_key("v1.10.0"))
        .unwrap()
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the periodic GC did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    // v1.10.0 went; the newest and the assigned v1.9.0 stayed. Its blobs are younger than
    // the service's grace period, so they stay until a later run.
    assert!(
        f.store
            .get_ref(ASSET_KIND, &kernel_key("v1.9.0"))
            .unwrap()
            .is_some()
    );
    assert!(
        f.store
            .get_ref(ASSET_KIND, &kernel_key("v1.11.0"))
            .unwrap()
            .is_some()
    );
    assert!(f.store.contains(&f.assets[1]));
}
