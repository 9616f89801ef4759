//! HTTPS with real clients: curl against the self-signed appliance CA (and failing without
//! it), an operator-provided certificate reloaded on SIGHUP and on file change (checked with
//! `openssl s_client`), skopeo and podman with `--cert-dir` through the registry, and the admin
//! token refused over plain HTTP from another host (two network namespaces, 192.0.2.0/24).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::TestServer;
use support::netns::{Netns, can_use_netns};
use support::tools::{free_port, have, podman, skopeo};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bootfactory"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BOOTFACTORY_") {
            c.env_remove(k);
        }
    }
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run")
}

/// curl's exit code and stdout (`-w '%{http_code}'` appended by callers).
fn curl(args: &[&str]) -> (i32, String) {
    let out = run(Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// `bootfactory serve` as a child process; killed on drop.
struct Serve {
    child: Child,
    port: u16,
}

impl Serve {
    fn start(data: &Path, args: &[&str]) -> Serve {
        let port = free_port();
        let child = bin()
            .args(["serve", "--data-dir"])
            .arg(data)
            .args(["--http-listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        support::tools::wait_listening(SocketAddr::from(([127, 0, 0, 1], port)));
        Serve { child, port }
    }

    fn hup(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The subject of the certificate served on `port` (openssl s_client).
fn served_subject(port: u16) -> String {
    let out = run(Command::new("sh").arg("-c").arg(format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -subject"
    )));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_subject(port: u16, want: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let s = served_subject(port);
        if s.contains(want) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A self-signed P-256 certificate for `localhost` with common name `cn` (openssl CLI).
fn openssl_pair(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{cn}.crt"));
    let key = dir.join(format!("{cn}.key"));
    let out = run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_appliance_is_trusted_through_its_ca_with_curl() {
    if !have("curl") {
        return;
    }
    let server = TestServer::start(&[
        ("http.tls.selfSigned", "true"),
        ("http.tls.extraNames", "factory.test,192.0.2.10"),
        ("http.externalURL", "https://bootfactory.test:8443"),
    ])
    .await;
    let port = server.addr.port();
    let ca = server.data_path("tls/ca.pem");
    let ca_s = ca.to_str().unwrap().to_string();
    let ca_before = std::fs::read(&ca).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["tls/ca-key.pem", "tls/server-key.pem"] {
            let mode = std::fs::metadata(server.data_path(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }
    let results = tokio::task::spawn_blocking(move || {
        let url = |host: &str| format!("https://{host}:{port}/healthz");
        let resolve = |host: &str| format!("{host}:{port}:127.0.0.1");
        vec![
            ("localhost", curl(&["--cacert", &ca_s, &url("localhost")])),
            ("127.0.0.1", curl(&["--cacert", &ca_s, &url("127.0.0.1")])),
            (
                "externalURL host",
                curl(&[
                    "--cacert",
                    &ca_s,
                    "--resolve",
                    &resolve("bootfactory.test"),
                    &url("bootfactory.test"),
                ]),
            ),
            (
                "extra name",
                curl(&[
                    "--cacert",
                    &ca_s,
                    "--resolve",
                    &resolve("factory.test"),
                    &url("factory.test"),
                ]),
            ),
            ("no CA", curl(&[&url("localhost")])),
            (
                "name not covered",
                curl(&[
                    "--cacert",
                    &ca_s,
                    "--resolve",
                    &resolve("other.test"),
                    &url("other.test"),
                ]),
            ),
            (
                "plain HTTP on the TLS port",
                curl(&[&format!("http://127.0.0.1:{port}/healthz")]),
            ),
        ]
    })
    .await
    .unwrap();
    for (what, (code, status)) in &results {
        match *what {
            "no CA" => assert_eq!(*code, 60, "{what}: {status}"),
            "name not covered" => assert_eq!(*code, 60, "{what}: {status}"),
            "plain HTTP on the TLS port" => assert_ne!(status, "200", "{what}"),
            _ => assert_eq!((*code, status.as_str()), (0, "200"), "{what}"),
        }
    }
    // No HSTS unless asked for.
    let headers = run(Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(&ca)
        .arg(format!("https://localhost:{port}/healthz")));
    let headers = String::from_utf8_lossy(&headers.stdout).to_ascii_lowercase();
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert!(!headers.contains("strict-transport-security"), "{headers}");

    // The CA is made once: a restart keeps it (and clients' trust).
    let data = server.stop().await;
    let server = TestServer::start_in(
        data,
        &[("http.tls.selfSigned", "true"), ("http.tls.hsts", "true")],
    )
    .await;
    assert_eq!(
        std::fs::read(server.data_path("tls/ca.pem")).unwrap(),
        ca_before
    );
    let port = server.addr.port();
    let headers = run(Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(server.data_path("tls/ca.pem"))
        .arg(format!("https://localhost:{port}/healthz")));
    let headers = String::from_utf8_lossy(&headers.stdout).to_ascii_lowercase();
    assert!(
        headers.contains("strict-transport-security: max-age=31536000"),
        "{headers}"
    );
}

#[test]
fn provided_certificate_is_reloaded_on_sighup_and_on_file_change() {
    if !have("openssl") || !have("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (c1, k1) = openssl_pair(dir.path(), "first");
    let (c2, k2) = openssl_pair(dir.path(), "second");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let install = |c: &Path, k: &Path| {
        std::fs::copy(k, &key).unwrap();
        std::fs::copy(c, &cert).unwrap();
    };
    install(&c1, &k1);
    let data = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        data.path(),
        &[
            "--http-tls-cert-file",
            cert.to_str().unwrap(),
            "--http-tls-key-file",
            key.to_str().unwrap(),
        ],
    );
    let port = serve.port;
    assert!(
        served_subject(port).contains("= first"),
        "{}",
        served_subject(port)
    );
    let (code, status) = curl(&[
        "--cacert",
        c1.to_str().unwrap(),
        &format!("https://localhost:{port}/healthz"),
    ]);
    assert_eq!((code, status.as_str()), (0, "200"));

    // Replaced files + SIGHUP: the new certificate is served at once.
    install(&c2, &k2);
    serve.hup();
    let subject = wait_subject(port, "= second", Duration::from_secs(3));
    assert!(subject.contains("= second"), "after SIGHUP: {subject}");
    let (code, status) = curl(&[
        "--cacert",
        c2.to_str().unwrap(),
        &format!("https://localhost:{port}/healthz"),
    ]);
    assert_eq!((code, status.as_str()), (0, "200"));

    // A broken file: reported, and the certificate in use stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    serve.hup();
    std::thread::sleep(Duration::from_secs(3));
    let subject = served_subject(port);
    assert!(subject.contains("= second"), "after a bad file: {subject}");

    // Changed files without a signal: picked up by the watcher.
    install(&c1, &k1);
    let subject = wait_subject(port, "= first", Duration::from_secs(8));
    assert!(
        subject.contains("= first"),
        "after a file change: {subject}"
    );
}

/// A data directory holding the fixture release.
async fn data_with_fixture() -> tempfile::TempDir {
    use bootfactory::fixture::{FixtureOptions, write_release};
    use bootfactory::oci::ImageCatalog;
    use bootfactory::oci::bundle::{self, NoProgress};
    use bootfactory::store::Store;
    let layout = tempfile::tempdir().unwrap();
    write_release(layout.path(), &FixtureOptions::default()).expect("fixture");
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path()).unwrap();
    let catalog = ImageCatalog::new(store.clone()).unwrap();
    bundle::import(&catalog, layout.path(), None, &NoProgress)
        .await
        .unwrap();
    store.flush().await.unwrap();
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_podman_use_the_registry_over_tls_with_cert_dir() {
    if !have("skopeo") {
        return;
    }
    let data = data_with_fixture().await;
    let server = TestServer::start_in(
        data,
        &[("offline", "true"), ("http.tls.selfSigned", "true")],
    )
    .await;
    // containers/image reads every *.crt in --cert-dir as a CA.
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(server.data_path("tls/ca.pem"), certs.path().join("ca.crt")).unwrap();
    let host = format!("localhost:{}", server.addr.port());
    let cert_dir = certs.path().to_str().unwrap().to_string();
    let (inspect, tags, untrusted) = tokio::task::spawn_blocking({
        let host = host.clone();
        let cert_dir = cert_dir.clone();
        move || {
            let image = format!("docker://{host}/siderolabs/imager:v1.11.6");
            (
                skopeo(&["inspect", "--raw", "--cert-dir", &cert_dir, &image]),
                skopeo(&[
                    "list-tags",
                    "--cert-dir",
                    &cert_dir,
                    &format!("docker://{host}/siderolabs/imager"),
                ]),
                skopeo(&["inspect", "--raw", &image]),
            )
        }
    })
    .await
    .unwrap();
    assert!(
        inspect.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(manifest["manifests"].is_array(), "{manifest}");
    assert!(
        String::from_utf8_lossy(&tags.stdout).contains("v1.11.6"),
        "skopeo list-tags: {}",
        String::from_utf8_lossy(&tags.stderr)
    );
    assert!(
        !untrusted.status.success(),
        "without the CA skopeo must refuse"
    );
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("certificate"), "{err}");

    if have("podman") {
        let p = tempfile::tempdir().unwrap();
        let reference = format!("{host}/siderolabs/imager:v1.11.6");
        let out = tokio::task::spawn_blocking({
            let dir = p.path().to_path_buf();
            move || {
                podman(
                    &dir,
                    &[
                        "pull",
                        "--cert-dir",
                        &cert_dir,
                        "--arch",
                        "arm64",
                        &reference,
                    ],
                )
            }
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "podman pull --cert-dir: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The HTTP status curl got inside `ns`.
fn curl_in(ns: &Netns, name: &str, args: &[&str]) -> String {
    let out = run(ns
        .exec(name)
        .args([
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn admin_token_is_refused_over_plain_http_from_another_host() {
    if !can_use_netns() || !have("curl") {
        return;
    }
    let ns = Netns::pair(
        "bftls",
        ("bft0", &["192.0.2.10/24"]),
        ("bft1", &["192.0.2.1/24"]),
    )
    .expect("network namespaces");
    let data = tempfile::tempdir().unwrap();
    let mut child = ns
        .exec(&ns.server)
        .arg(env!("CARGO_BIN_EXE_bootfactory"))
        .args(["serve", "--data-dir"])
        .arg(data.path())
        .args([
            "--http-listen",
            "0.0.0.0:8443",
            "--http-plain-listen",
            "0.0.0.0:8080",
            "--http-tls-self-signed",
            "--http-tls-extra-names",
            "192.0.2.10",
            "--api-admin-token",
            "tok",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut child);
    let ca = data.path().join("tls/ca.pem");
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl_in(&ns, &ns.client, &["http://192.0.2.10:8080/healthz"]) != "200" {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let auth = ["-H", "Authorization: Bearer tok"];
    let api = "/api/v1/machines";
    // Another host, plain HTTP: refused with a clear message, token or not.
    let out = run(ns
        .exec(&ns.client)
        .args(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(auth)
        .arg(format!("http://192.0.2.10:8080{api}")));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.ends_with("403"), "{text}");
    assert!(text.contains("only available over HTTPS"), "{text}");
    // The same host over HTTPS: fine.
    let mut https = vec!["--cacert", ca.to_str().unwrap()];
    https.extend(auth);
    let url = format!("https://192.0.2.10:8443{api}");
    https.push(&url);
    assert_eq!(curl_in(&ns, &ns.client, &https), "200");
    // Loopback on the appliance itself over plain HTTP: fine.
    let mut local = auth.to_vec();
    let url = format!("http://127.0.0.1:8080{api}");
    local.push(&url);
    assert_eq!(curl_in(&ns, &ns.server, &local), "200");
    // The boot path stays on plain HTTP for other hosts.
    assert_eq!(
        curl_in(&ns, &ns.client, &["http://192.0.2.10:8080/ipxe/ipxe.efi"]),
        "200"
    );
}

/// The DER certificates of every PEM block in `text`, in order.
fn pem_blocks(text: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|rest| rest.split("-----END CERTIFICATE-----").next())
        .map(|b64| {
            let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .unwrap()
        })
        .collect()
}

/// Offsets of `needle` in `haystack`.
fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// HTTPS boot's trust without a machine: the chain the server sends ends with the appliance
/// CA (RSA, so iPXE can verify it), and `ipxe.efi` — over TFTP and over `GET /ipxe/` alike —
/// holds the CA's SHA-256 in place of iPXE's root CA, while `undionly.kpxe` is served as built.
#[test]
fn https_boot_chain_ends_with_the_ca_and_the_served_ipxe_trusts_it() {
    use sha2::{Digest, Sha256};
    if !have("curl") || !have("openssl") {
        eprintln!("skipping: needs curl and openssl");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let ports: Vec<String> = (0..4).map(|_| free_port().to_string()).collect();
    let server = Serve::start(
        data.path(),
        &[
            "--http-tls-self-signed",
            "--pxe",
            "--pxe-advertise-address",
            "127.0.0.1",
            "--pxe-dhcp-port",
            &ports[0],
            "--pxe-proxy-port",
            &ports[1],
            "--pxe-client-port",
            &ports[2],
            "--pxe-tftp-port",
            &ports[3],
            "--pxe-ipxe-variant",
            "https",
        ],
    );
    let port = server.port;
    let ca_path = data.path().join("tls/ca.pem");
    let ca_der = pem_blocks(&std::fs::read_to_string(&ca_path).unwrap()).remove(0);
    let fingerprint = Sha256::digest(&ca_der);

    // The chain: leaf first, the CA last; both RSA.
    let out = run(Command::new("sh").arg("-c").arg(format!(
        "openssl s_client -connect 127.0.0.1:{port} -showcerts -tls1_2 </dev/null 2>/dev/null"
    )));
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    let chain = pem_blocks(&shown);
    assert_eq!(chain.len(), 2, "{shown}");
    assert_eq!(
        chain.last().unwrap(),
        &ca_der,
        "the chain must end with the CA"
    );
    for (what, der) in [("leaf", &chain[0]), ("CA", &ca_der)] {
        let path = data.path().join(format!("{what}.der"));
        std::fs::write(&path, der).unwrap();
        let text = run(Command::new("openssl")
            .args(["x509", "-inform", "DER", "-noout", "-text", "-in"])
            .arg(&path));
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("rsaEncryption"), "{what}: {text}");
        assert!(text.contains("sha256WithRSAEncryption"), "{what}: {text}");
    }
    // The leaf covers the advertised address (the default boot URL's host).
    let verify = curl(&[
        "--cacert",
        ca_path.to_str().unwrap(),
        &format!("https://127.0.0.1:{port}/healthz"),
    ]);
    assert_eq!(verify, (0, "200".to_string()));

    // ipxe.efi over HTTPS and over TFTP: the same patched bytes.
    let over_http = data.path().join("http-ipxe.efi");
    let over_tftp = data.path().join("tftp-ipxe.efi");
    let got = run(Command::new("curl")
        .args(["-sSf", "--max-time", "20", "--cacert"])
        .arg(&ca_path)
        .arg("-o")
        .arg(&over_http)
        .arg(format!("https://127.0.0.1:{port}/ipxe/ipxe.efi")));
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let got = run(Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o"])
        .arg(&over_tftp)
        .arg(format!("tftp://127.0.0.1:{}/ipxe.efi", ports[3])));
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let http_bytes = std::fs::read(&over_http).unwrap();
    let tftp_bytes = std::fs::read(&over_tftp).unwrap();
    assert!(
        http_bytes == tftp_bytes,
        "TFTP and HTTP serve different ipxe.efi"
    );
    assert_eq!(find_all(&http_bytes, &fingerprint).len(), 1);
    let ipxe_root =
        hex::decode("9faf717b7f8ca2f93c256c79f8ac5591895d66d1ff3bee6397a70d29c65eed1a").unwrap();
    assert!(find_all(&http_bytes, &ipxe_root).is_empty());

    // undionly.kpxe (compressed) is served as built: its bytes hash to ipxe/SHA256SUMS.
    let bios = data.path().join("undionly.kpxe");
    let got = run(Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o"])
        .arg(&bios)
        .arg(format!("tftp://127.0.0.1:{}/undionly.kpxe", ports[3])));
    assert!(got.status.success());
    let sums =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ipxe/SHA256SUMS")).unwrap();
    let want = sums
        .lines()
        .find(|l| l.ends_with("undionly.kpxe"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    assert_eq!(
        hex::encode(Sha256::digest(std::fs::read(&bios).unwrap())),
        want
    );
}
