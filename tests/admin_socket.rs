//! One appliance, whoever asks: the CLI talks to a running `bootfactory serve` over its admin
//! socket (`<dataDir>/admin.sock`) instead of fighting it for the store's lock, imports a
//! bundle while the server keeps serving, and falls back to opening the store itself when no
//! server runs. Real processes throughout: the `bootfactory` binary, `curl`, `tar`, and (as
//! root) `setpriv` for another uid.

mod support;

use support::output_text as text;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bootfactory::fixture::{FixtureOptions, write_release};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bootfactory"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c
}

fn mirror(data: &Path, args: &[&str]) -> Output {
    bin()
        .arg("mirror")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

/// A fixture release (one Talos version) in namespace `ns`, as a `tar.gz` bundle.
fn bundle(dir: &Path, ns: &str) -> PathBuf {
    let layout = dir.join(format!("layout-{ns}"));
    let opts = FixtureOptions {
        versions: vec!["v1.11.6".into()],
        namespace: ns.into(),
        ..FixtureOptions::default()
    };
    write_release(&layout, &opts).unwrap();
    let out = dir.join(format!("{ns}.tar.gz"));
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .args(["-czf"])
        .arg(&out)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// `bootfactory serve` on `data` (offline, loopback), killed when dropped.
struct Server {
    child: Child,
    port: u16,
    data: PathBuf,
}

impl Server {
    fn start(data: &Path) -> Server {
        Server::start_with(data, bin())
    }

    /// Starts `cmd` + `serve …` (e.g. `setpriv … bootfactory`).
    fn start_with(data: &Path, mut cmd: Command) -> Server {
        let port = support::tools::free_port();
        let child = cmd
            .args(["serve", "--offline", "--data-dir"])
            .arg(data)
            .args(["--http-listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            port,
            data: data.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(server.data.join("admin.sock").exists()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        {
            assert!(Instant::now() < deadline, "the server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGTERM, and waits for a clean exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "clean exit after SIGTERM: {s:?}");
                return;
            }
            assert!(Instant::now() < deadline, "the server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` with `args`; (HTTP status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The image index of `ns/imager:v1.11.6` over the running server's `/v2`.
fn imager_manifest(server: &Server, ns: &str) -> u16 {
    curl(&[
        "-H",
        "Accept: application/vnd.oci.image.index.v1+json",
        &server.url(&format!("/v2/{ns}/imager/manifests/v1.11.6?ns=ghcr.io")),
    ])
    .0
}

fn image_count(list: &Output) -> usize {
    let t = String::from_utf8_lossy(&list.stdout).to_string();
    let last = t.lines().last().unwrap_or_default().to_string();
    last.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no image count in {t}"))
}

#[test]
fn mirror_commands_talk_to_the_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let first = bundle(tmp.path(), "siderolabs");
    let second = bundle(tmp.path(), "killtest");

    // A socket file left by a server that is gone: commands ignore it, serve replaces it.
    drop(std::os::unix::net::UnixListener::bind(data.join("admin.sock")).unwrap());
    let out = mirror(&data, &["list"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(image_count(&out), 0);

    let server = Server::start(&data);
    // No lock error: the command asks the server.
    let out = mirror(&data, &["list"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("lock"), "{}", text(&out));
    assert_eq!(image_count(&out), 0);
    assert_eq!(imager_manifest(&server, "siderolabs"), 404);

    // Import while serving; the image is then served over /v2 by the same server.
    let out = mirror(&data, &["import", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("18 images; "), "{}", text(&out));
    assert_eq!(imager_manifest(&server, "siderolabs"), 200);
    assert_eq!(image_count(&mirror(&data, &["list"])), 18);

    // A client that goes away midway (a slow upload, killed): reads keep being served during
    // the upload, nothing of the bundle becomes visible, and the re-run completes.
    let socket = data.join("admin.sock");
    let mut slow = Command::new("curl")
        .args(["-s", "--limit-rate", "20k", "--unix-socket"])
        .arg(&socket)
        .arg("-T")
        .arg(&second)
        .args(["-X", "POST", "http://localhost/api/v1/images/import"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let size = std::fs::metadata(&second).unwrap().len();
    assert!(
        size > 40 * 1024,
        "the bundle takes a while at 20k/s: {size}"
    );
    for _ in 0..10 {
        assert_eq!(
            imager_manifest(&server, "siderolabs"),
            200,
            "read during import"
        );
        assert_eq!(curl(&[&server.url("/healthz")]).0, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        slow.try_wait().unwrap().is_none(),
        "the upload is still running"
    );
    slow.kill().unwrap();
    slow.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        imager_manifest(&server, "killtest"),
        404,
        "half an import is invisible"
    );
    let list = mirror(&data, &["list"]);
    assert_eq!(image_count(&list), 18, "{}", text(&list));
    assert!(!text(&list).contains("killtest"), "{}", text(&list));
    let out = mirror(&data, &["import", second.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(imager_manifest(&server, "killtest"), 200);
    assert_eq!(image_count(&mirror(&data, &["list"])), 36);

    // Export through the server, written atomically.
    let exported = tmp.path().join("export.tar");
    let out = mirror(
        &data,
        &[
            "export",
            "-o",
            exported.to_str().unwrap(),
            "ghcr.io/siderolabs/imager:v1.11.6",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let listing = Command::new("tar")
        .arg("tf")
        .arg(&exported)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        listing.contains("index.json") && listing.contains("blobs/sha256/"),
        "{listing}"
    );
    assert!(!bootfactory::oci::bundle::partial_path(&exported).exists());

    // machine … uses the socket: no token, and the HTTP address given is wrong on purpose.
    let out = bin()
        .args(["machine", "list", "--data-dir"])
        .arg(&data)
        .env("BOOTFACTORY_HTTP_LISTEN", "127.0.0.1:1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("unassigned machines"), "{}", text(&out));

    // The bearer token keeps working over TCP; without it, 401.
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let auth = format!("Authorization: Bearer {}", token.trim());
    let (status, body) = curl(&["-H", &auth, &server.url("/api/v1/images")]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("killtest/imager:v1.11.6"), "{body}");
    assert_eq!(curl(&[&server.url("/api/v1/images")]).0, 401);
    assert_eq!(curl(&[&server.url("/api/v1/status")]).0, 401);

    // Stopped, the server removes its socket; the commands open the store themselves.
    server.stop();
    assert!(!socket.exists());
    let out = mirror(&data, &["list"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(image_count(&out), 36);
}

#[test]
fn a_missing_data_directory_is_named_and_not_created() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("nowhere");
    for args in [&["mirror", "list"][..], &["store", "verify"][..]] {
        let out = bin()
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains("does not exist") && err.contains("--data-dir"),
            "{args:?}: {err}"
        );
        assert_eq!(
            err.matches("does not exist").count(),
            1,
            "printed once: {err}"
        );
        assert!(!data.exists(), "{args:?} created {}", data.display());
    }
    // Filling a new store before its first `serve`: an import creates the directory it was
    // pointed at, and says so.
    let bundle = tmp.path().join("empty-layout");
    std::fs::create_dir_all(bundle.join("blobs/sha256")).unwrap();
    std::fs::write(
        bundle.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        bundle.join("index.json"),
        r#"{"schemaVersion":2,"manifests":[]}"#,
    )
    .unwrap();
    let out = bin()
        .args(["mirror", "import"])
        .arg(&bundle)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("created data directory"), "{err}");
    assert!(data.join("index.sled").is_dir(), "{err}");
}

#[test]
fn as_root_the_cli_writes_as_the_data_directory_owner() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root (to run the CLI as root on another user's data directory)");
        return;
    }
    const SERVICE_UID: u32 = 65534;
    const OTHER_UID: u32 = 65533;
    let tmp = tempfile::tempdir().unwrap();
    // Traversable by the service user; the data directory is its own, private.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let first = bundle(tmp.path(), "siderolabs");
    std::fs::set_permissions(&first, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    nix::unistd::chown(
        &data,
        Some(nix::unistd::Uid::from_raw(SERVICE_UID)),
        Some(nix::unistd::Gid::from_raw(SERVICE_UID)),
    )
    .unwrap();

    // Root, umask 077, a root-only bundle: imported, and everything written is the owner's.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 077; exec {} mirror import {} --data-dir {}",
            env!("CARGO_BIN_EXE_bootfactory"),
            first.display(),
            data.display()
        ))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut wrong = Vec::new();
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.uid() != SERVICE_UID {
                wrong.push(format!("{} uid {}", path.display(), meta.uid()));
            }
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "files not owned by the data directory's owner: {wrong:?}"
    );

    if !support::tools::have("setpriv") {
        return;
    }
    let as_uid = |uid: u32| {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            env!("CARGO_BIN_EXE_bootfactory"),
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        c
    };
    // The service, as its own user, starts on what root imported and lists it (root asks
    // through the socket).
    let server = Server::start_with(&data, as_uid(SERVICE_UID));
    let out = mirror(&data, &["list"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(image_count(&out), 18);
    assert_eq!(imager_manifest(&server, "siderolabs"), 200);

    // Another user cannot connect (mode 0600) ...
    let out = as_uid(OTHER_UID)
        .args(["mirror", "list", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("root or as the service's user"),
        "{}",
        text(&out)
    );
    // ... and were the socket (and the directory on its way) opened up, its uid is refused
    // by the server.
    let socket = data.join("admin.sock");
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={OTHER_UID}"),
            &format!("--regid={OTHER_UID}"),
            "--clear-groups",
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
        ])
        .arg(&socket)
        .arg("http://localhost/api/v1/images")
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(answer.ends_with("403"), "{answer}");
    assert!(answer.contains(&format!("uid {OTHER_UID}")), "{answer}");
    server.stop();
}

#[test]
fn a_held_lock_names_the_holder_and_a_refused_permission_says_permission() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // A server without its admin socket: the command opens the store itself and finds it held.
    let port = support::tools::free_port();
    let mut child = bin()
        .args(["serve", "--offline", "--api-socket", "", "--data-dir"])
        .arg(&data)
        .args(["--http-listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !data.join("admin.sock").exists(),
        "api.socket '' means no socket"
    );
    let out = mirror(&data, &["list"]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains(&format!("another bootfactory process (pid {})", child.id())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "printed once: {err}");
    assert_eq!(err.matches("locked").count(), 1, "each cause once: {err}");

    if !nix::unistd::geteuid().is_root() || !support::tools::have("setpriv") {
        return;
    }
    // Another user on root's private data directory: permission, not another process.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_bootfactory"),
            "mirror",
            "list",
            "--data-dir",
        ])
        .arg(&data)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("permission denied") && err.contains("owned by uid 0"),
        "{err}"
    );
    assert!(!err.contains("another"), "{err}");
}

#[test]
fn the_admin_api_refuses_what_is_not_a_bundle_or_an_image() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let server = Server::start(&data);
    let socket = data.join("admin.sock");
    let sock = socket.to_str().unwrap();
    // Not a bundle: 400 before any progress.
    let (status, body) = curl(&[
        "--unix-socket",
        sock,
        "-X",
        "POST",
        "--data-binary",
        "{\"schemaVersion\": 2}",
        "http://localhost/api/v1/images/import",
    ]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a bundle"), "{body}");
    // A tar that is not an OCI layout: the answer streams, and ends in an error event.
    let junk = tmp.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("hello.txt"), "hi").unwrap();
    let tar = tmp.path().join("junk.tar");
    assert!(
        Command::new("tar")
            .arg("-C")
            .arg(&junk)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let (status, body) = curl(&[
        "--unix-socket",
        sock,
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", tar.display()),
        "http://localhost/api/v1/images/import",
    ]);
    assert_eq!(status, 200, "{body}");
    let last: serde_json::Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "error", "{body}");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("OCI image layout"),
        "{body}"
    );
    // Bad names and empty lists: 400.
    for (args, what) in [
        (
            vec![
                "-X",
                "POST",
                "--data-binary",
                "{\"images\": []}",
                "-H",
                "Content-Type: application/json",
                "http://localhost/api/v1/images/pull",
            ],
            "empty pull",
        ),
        (
            vec![
                "-X",
                "POST",
                "--data-binary",
                "{\"images\": [\"UPPER/Case:bad tag\"]}",
                "http://localhost/api/v1/images/pull",
            ],
            "bad pull ref",
        ),
        (
            vec!["http://localhost/api/v1/images/export"],
            "export of nothing",
        ),
        (
            vec!["http://localhost/api/v1/images/export?image=..%2Fetc"],
            "bad export ref",
        ),
        (
            vec![
                "-X",
                "POST",
                "--data-binary",
                "x",
                "http://localhost/api/v1/images/import?name=a:b",
            ],
            "tagged --name",
        ),
    ] {
        let mut all = vec!["--unix-socket", sock];
        all.extend(args);
        let (status, body) = curl(&all);
        assert_eq!(status, 400, "{what}: {body}");
    }
    // Offline and not stored: 404, with the image named.
    let (status, body) = curl(&[
        "--unix-socket",
        sock,
        "http://localhost/api/v1/images/export?image=ghcr.io/siderolabs/imager:v1.11.6",
    ]);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("ghcr.io/siderolabs/imager:v1.11.6"), "{body}");
    server.stop();
}
