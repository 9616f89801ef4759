//! The table of configuration keys: dotted key, command-line flag, and help text.
//!
//! The environment variable of a key is `BOOTFACTORY_` + its flag in upper case with `-`
//! replaced by `_` (`--http-listen` ↔ `BOOTFACTORY_HTTP_LISTEN`).

use serde_yaml::Value;

use super::Config;

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// Dotted key as written in the YAML file (`http.listen`).
    pub key: &'static str,
    /// Long flag without dashes (`http-listen`).
    pub flag: &'static str,
    /// One-line help.
    pub help: &'static str,
}

impl KeySpec {
    /// The environment variable that overrides this key.
    pub fn env(&self) -> String {
        format!("BOOTFACTORY_{}", self.flag.to_uppercase().replace('-', "_"))
    }
}

/// Every configuration key. A unit test checks this list against [`Config`]'s fields.
pub const KEYS: &[KeySpec] = &[
    KeySpec {
        key: "dataDir",
        flag: "data-dir",
        help: "Directory for the store (blobs + index), keys and caches",
    },
    KeySpec {
        key: "log.level",
        flag: "log-level",
        help: "Log filter: error, warn, info, debug, trace, or per-module (bootfactory=debug)",
    },
    KeySpec {
        key: "log.format",
        flag: "log-format",
        help: "Log format: text or json",
    },
    KeySpec {
        key: "http.listen",
        flag: "http-listen",
        help: "HTTP listen address ADDR:PORT (factory API, registry, boot scripts, UI)",
    },
    KeySpec {
        key: "http.externalURL",
        flag: "http-external-url",
        help: "Absolute URL clients reach this server at; default derived from --http-listen",
    },
    KeySpec {
        key: "http.externalPXEURL",
        flag: "http-external-pxe-url",
        help: "Absolute URL used in iPXE scripts; default --http-external-url",
    },
    KeySpec {
        key: "http.shutdownGraceSeconds",
        flag: "http-shutdown-grace-seconds",
        help: "Seconds in-flight requests get to finish on SIGTERM/SIGINT",
    },
    KeySpec {
        key: "http.headerReadTimeoutSeconds",
        flag: "http-header-read-timeout-seconds",
        help: "Seconds a client has to send a request head (slowloris defence; includes TLS handshake)",
    },
    KeySpec {
        key: "http.idleTimeoutSeconds",
        flag: "http-idle-timeout-seconds",
        help: "Seconds an idle keep-alive connection (or a response the client stopped reading) is kept",
    },
    KeySpec {
        key: "http.bodyReadTimeoutSeconds",
        flag: "http-body-read-timeout-seconds",
        help: "Seconds a client has to send a whole request body",
    },
    KeySpec {
        key: "http.maxConnections",
        flag: "http-max-connections",
        help: "HTTP connections open at once; at the cap the oldest idle one is closed, or 503",
    },
    KeySpec {
        key: "http.plainListen",
        flag: "http-plain-listen",
        help: "With TLS: extra plain-HTTP listener ADDR:PORT for the boot path (firmware, iPXE)",
    },
    KeySpec {
        key: "http.tls.certFile",
        flag: "http-tls-cert-file",
        help: "PEM certificate chain for HTTPS on --http-listen (reloaded on SIGHUP and change)",
    },
    KeySpec {
        key: "http.tls.keyFile",
        flag: "http-tls-key-file",
        help: "PEM private key for --http-tls-cert-file",
    },
    KeySpec {
        key: "http.tls.selfSigned",
        flag: "http-tls-self-signed",
        help: "HTTPS with a generated appliance CA (<dataDir>/tls/ca.pem is what clients trust)",
    },
    KeySpec {
        key: "http.tls.extraNames",
        flag: "http-tls-extra-names",
        help: "Extra DNS names/IPs for the self-signed server certificate (comma-separated)",
    },
    KeySpec {
        key: "http.tls.hsts",
        flag: "http-tls-hsts",
        help: "Send Strict-Transport-Security on HTTPS responses",
    },
    KeySpec {
        key: "http.tls.adminOverPlain",
        flag: "http-tls-admin-over-plain",
        help: "With TLS: accept the admin token over plain HTTP from non-loopback clients",
    },
    KeySpec {
        key: "schematics.dir",
        flag: "schematics-dir",
        help: "Directory of schematic *.yaml files validated and stored at start",
    },
    KeySpec {
        key: "offline",
        flag: "offline",
        help: "Never contact upstream registries; serve only what is in the store (air-gapped)",
    },
    KeySpec {
        key: "upstream.tagTTLSeconds",
        flag: "upstream-tag-ttl-seconds",
        help: "Seconds a tag->digest answer from an upstream is trusted before asking again",
    },
    KeySpec {
        key: "upstream.timeoutSeconds",
        flag: "upstream-timeout-seconds",
        help: "Timeout of one upstream request (blobs: to first byte and between chunks)",
    },
    KeySpec {
        key: "upstream.retries",
        flag: "upstream-retries",
        help: "Retries with backoff for transient upstream errors (connect, timeout, 429, 5xx)",
    },
    KeySpec {
        key: "upstream.registries",
        flag: "upstream-registries",
        help: "Per-registry endpoint/insecure/username/password/token, as YAML: {ghcr.io: {endpoint: http://10.0.0.5:5000}}",
    },
    KeySpec {
        key: "mirror.allow",
        flag: "mirror-allow",
        help: "Upstream registries clients may pull through the mirror (comma-separated)",
    },
    KeySpec {
        key: "mirror.defaultRegistry",
        flag: "mirror-default-registry",
        help: "Registry meant by /v2/<repo>/... requests that name none (no ?ns=, no host prefix)",
    },
    KeySpec {
        key: "mirror.maxFetches",
        flag: "mirror-max-fetches",
        help: "Most upstream blob downloads registry clients may start at once (429 over it)",
    },
    KeySpec {
        key: "artifacts.core.registry",
        flag: "artifacts-registry",
        help: "Registry of the Talos artifacts (imager, extensions, installers, overlays)",
    },
    KeySpec {
        key: "artifacts.core.namespace",
        flag: "artifacts-namespace",
        help: "Path prefix of the artifacts inside that registry",
    },
    KeySpec {
        key: "artifacts.core.insecure",
        flag: "artifacts-insecure",
        help: "Reach the artifacts registry over plain HTTP",
    },
    KeySpec {
        key: "artifacts.core.components.installerBase",
        flag: "artifacts-installer-base",
        help: "Repository of installer-base (Talos >= 1.10)",
    },
    KeySpec {
        key: "artifacts.core.components.installer",
        flag: "artifacts-installer",
        help: "Repository of installer (Talos < 1.10)",
    },
    KeySpec {
        key: "artifacts.core.components.imager",
        flag: "artifacts-imager",
        help: "Repository of the imager",
    },
    KeySpec {
        key: "artifacts.core.components.extensionManifest",
        flag: "artifacts-extension-manifest",
        help: "Repository of the extensions catalog",
    },
    KeySpec {
        key: "artifacts.core.components.overlayManifest",
        flag: "artifacts-overlay-manifest",
        help: "Repository of the overlays catalog",
    },
    KeySpec {
        key: "artifacts.core.components.talosctl",
        flag: "artifacts-talosctl",
        help: "Repository of talosctl-all",
    },
    KeySpec {
        key: "build.minTalosVersion",
        flag: "build-min-talos-version",
        help: "Oldest Talos version the factory serves",
    },
    KeySpec {
        key: "build.brokenTalosVersions",
        flag: "build-broken-talos-versions",
        help: "Talos versions never served (comma-separated)",
    },
    KeySpec {
        key: "build.maxConcurrency",
        flag: "build-max-concurrency",
        help: "Asset builds running at once (default: number of CPUs)",
    },
    KeySpec {
        key: "build.timeoutSeconds",
        flag: "build-timeout-seconds",
        help: "Seconds one asset build may take",
    },
    KeySpec {
        key: "build.versionRecheckSeconds",
        flag: "build-version-recheck-seconds",
        help: "Seconds the list of Talos versions is trusted before listing the imager's tags again",
    },
    KeySpec {
        key: "build.perClientBurst",
        flag: "build-per-client-burst",
        help: "New asset builds one client address may start at once; cached assets are free (0 = no limit)",
    },
    KeySpec {
        key: "build.perClientPerMinute",
        flag: "build-per-client-per-minute",
        help: "New asset builds per minute a client address is allowed after its burst (0 = no limit)",
    },
    KeySpec {
        key: "cache.signingKeyPath",
        flag: "cache-signing-key-path",
        help: "PEM P-256 key signing cached assets (default <data-dir>/cache-signing-key.pem, generated)",
    },
    KeySpec {
        key: "cache.oci.repository",
        flag: "cache-oci-repository",
        help: "OCI repository host[:port]/path shared by appliances as a build cache (pushed after builds, looked up before)",
    },
    KeySpec {
        key: "cache.oci.insecure",
        flag: "cache-oci-insecure",
        help: "Reach the cache repository's registry over plain HTTP",
    },
    KeySpec {
        key: "cache.oci.publicKeyFiles",
        flag: "cache-oci-public-key-files",
        help: "PEM public keys of other appliances whose cache entries are trusted (own key always)",
    },
    KeySpec {
        key: "factory.parent",
        flag: "factory-parent",
        help: "Parent factory URL (Image Factory or bootfactory) asked for an asset before building it",
    },
    KeySpec {
        key: "factory.parentVerify",
        flag: "factory-parent-verify",
        help: "How a parent's asset is verified: sha256 (its .sha256), signature (a bootfactory parent's .sig) or none",
    },
    KeySpec {
        key: "factory.parentPublicKeyFile",
        flag: "factory-parent-public-key-file",
        help: "PEM public key of a bootfactory parent (its /oci/cosign/signing-key.pub), for parentVerify: signature",
    },
    KeySpec {
        key: "factory.parentFallback",
        flag: "factory-parent-fallback",
        help: "When the parent lacks an asset, is down or fails verification: build (here) or fail (502)",
    },
    KeySpec {
        key: "factory.parentTimeoutSeconds",
        flag: "factory-parent-timeout-seconds",
        help: "Seconds to wait for the parent to answer (and between chunks of an asset)",
    },
    KeySpec {
        key: "metrics.listen",
        flag: "metrics-listen",
        help: "Extra ADDR:PORT serving only /metrics (it is always on the main port too)",
    },
    KeySpec {
        key: "pxe.enabled",
        flag: "pxe",
        help: "Run proxy-DHCP (67, 4011) and TFTP (69) for network boot (needs CAP_NET_BIND_SERVICE)",
    },
    KeySpec {
        key: "pxe.interfaces",
        flag: "pxe-interfaces",
        help: "Interfaces to answer PXE clients on (comma-separated; needs CAP_NET_RAW); default all",
    },
    KeySpec {
        key: "pxe.advertiseAddress",
        flag: "pxe-advertise-address",
        help: "IPv4 address PXE clients reach us at (default: first address of the first interface)",
    },
    KeySpec {
        key: "pxe.dhcpPort",
        flag: "pxe-dhcp-port",
        help: "proxy-DHCP server port",
    },
    KeySpec {
        key: "pxe.proxyPort",
        flag: "pxe-proxy-port",
        help: "PXE proxy (boot server) port",
    },
    KeySpec {
        key: "pxe.clientPort",
        flag: "pxe-client-port",
        help: "Port DHCP replies are sent to",
    },
    KeySpec {
        key: "pxe.tftpPort",
        flag: "pxe-tftp-port",
        help: "TFTP server port",
    },
    KeySpec {
        key: "pxe.tftpDir",
        flag: "pxe-tftp-dir",
        help: "Extra directory served read-only over TFTP",
    },
    KeySpec {
        key: "pxe.tftpMaxSessions",
        flag: "pxe-tftp-max-sessions",
        help: "TFTP transfers in progress at most (more get a 'server busy' error; also held to 1/8 of the fd limit)",
    },
    KeySpec {
        key: "pxe.tftpMaxSessionsPerClient",
        flag: "pxe-tftp-max-sessions-per-client",
        help: "TFTP transfers in progress from one client IP address at most",
    },
    KeySpec {
        key: "pxe.tftpTimeoutSeconds",
        flag: "pxe-tftp-timeout-seconds",
        help: "TFTP retransmission timeout, 1-10 s (client timeout options are not accepted)",
    },
    KeySpec {
        key: "pxe.unassigned",
        flag: "pxe-unassigned",
        help: "Machines without an assignment: boot-default, ignore (no DHCP answer) or local-disk",
    },
    KeySpec {
        key: "pxe.ipxeVariant",
        flag: "pxe-ipxe-variant",
        help: "Boot URLs over http or https (https chains iPXE builds without HTTPS to ours)",
    },
    KeySpec {
        key: "pxe.ipxeTrust",
        flag: "pxe-ipxe-trust",
        help: "With http.tls: what the served EFI iPXE binaries trust: auto (boot-ca, or ipxe-root when pxe.bootURL is set), boot-ca (the root the HTTPS chain ends with) or ipxe-root (as built)",
    },
    KeySpec {
        key: "pxe.efiBinary",
        flag: "pxe-efi-binary",
        help: "x86-64 UEFI network boot program: ipxe.efi or snponly.efi",
    },
    KeySpec {
        key: "pxe.bootURL",
        flag: "pxe-boot-url",
        help: "IP-literal base URL for iPXE and UEFI HTTP boot (default http://<advertise>:<http port>)",
    },
    KeySpec {
        key: "pxe.dhcpMode",
        flag: "pxe-dhcp-mode",
        help: "proxy (boot options next to the network's DHCP server) or full (be the DHCP server of an isolated lab)",
    },
    KeySpec {
        key: "pxe.dhcp.range",
        flag: "pxe-dhcp-range",
        help: "Full DHCP: addresses handed out, START-END inclusive (required in full mode)",
    },
    KeySpec {
        key: "pxe.dhcp.netmask",
        flag: "pxe-dhcp-netmask",
        help: "Full DHCP: option 1 (default: the prefix of the interface address in the range's subnet)",
    },
    KeySpec {
        key: "pxe.dhcp.router",
        flag: "pxe-dhcp-router",
        help: "Full DHCP: option 3, default gateway (default none)",
    },
    KeySpec {
        key: "pxe.dhcp.dns",
        flag: "pxe-dhcp-dns",
        help: "Full DHCP: option 6, DNS servers (comma-separated; default none)",
    },
    KeySpec {
        key: "pxe.dhcp.domain",
        flag: "pxe-dhcp-domain",
        help: "Full DHCP: option 15, domain name (default none)",
    },
    KeySpec {
        key: "pxe.dhcp.leaseSeconds",
        flag: "pxe-dhcp-lease-seconds",
        help: "Full DHCP: lease time, option 51 (T1 50 %, T2 87.5 %)",
    },
    KeySpec {
        key: "pxe.dhcp.offerSeconds",
        flag: "pxe-dhcp-offer-seconds",
        help: "Full DHCP: an offered, unrequested address returns to the pool after this long",
    },
    KeySpec {
        key: "pxe.dhcp.probe",
        flag: "pxe-dhcp-probe",
        help: "Full DHCP: ICMP-probe an address before offering it (false only for tests/benchmarks)",
    },
    KeySpec {
        key: "api.adminToken",
        flag: "api-admin-token",
        help: "Bearer token for /api/v1 (default: generated into <data-dir>/admin-token)",
    },
    KeySpec {
        key: "api.socket",
        flag: "api-socket",
        help: "Admin Unix socket (relative: in the data dir; default admin.sock; empty = none); the CLI talks to a running serve through it",
    },
    KeySpec {
        key: "api.uiSessionMinutes",
        flag: "ui-session-minutes",
        help: "How long a web UI login (the admin pages' session) lasts, in minutes",
    },
    KeySpec {
        key: "assignments.file",
        flag: "assignments-file",
        help: "assignments.yaml applied at start (machines and default it names replace stored ones)",
    },
    KeySpec {
        key: "store.maxBytes",
        flag: "store-max-bytes",
        help: "Most bytes of content the store holds; new content past it is refused with 507 (0 = no limit)",
    },
    KeySpec {
        key: "store.minFreeBytes",
        flag: "store-min-free-bytes",
        help: "Bytes kept free on the data directory's filesystem; new content is refused with 507 below it (0 = none)",
    },
    KeySpec {
        key: "store.gc.keepVersions",
        flag: "store-gc-keep-versions",
        help: "store gc keeps the release content of the newest N Talos versions (0 = every version)",
    },
    KeySpec {
        key: "store.gc.keepReferenced",
        flag: "store-gc-keep-referenced",
        help: "store gc never removes the versions and assets machine assignments boot",
    },
    KeySpec {
        key: "store.gc.maxBytes",
        flag: "store-gc-max-bytes",
        help: "store gc evicts built assets, least recently used first, down to this size (0 = no target)",
    },
    KeySpec {
        key: "store.gc.intervalHours",
        flag: "store-gc-interval-hours",
        help: "Run store gc with the store.gc policy in serve every N hours (0 = never)",
    },
    KeySpec {
        key: "assignments.inventoryMaxMachines",
        flag: "inventory-max-machines",
        help: "Most machines in the inventory; the least recently seen unassigned one is evicted (0 = unbounded)",
    },
    KeySpec {
        key: "assignments.inventoryMaxAgeDays",
        flag: "inventory-max-age-days",
        help: "Forget unassigned machines not seen for this many days (0 = never)",
    },
    KeySpec {
        key: "assignments.warmOnAssign",
        flag: "warm-on-assign",
        help: "Build a machine's kernel, initramfs and command line in the background when the admin API assigns it",
    },
];

/// Looks a key up by its dotted name.
pub fn find(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.key == key)
}

/// The default value of a key, from `Config::default()`.
pub fn default_value(key: &str) -> Option<Value> {
    let mut node = serde_yaml::to_value(Config::default()).ok()?;
    for part in key.split('.') {
        node = node.as_mapping()?.get(part)?.clone();
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All leaf keys of a YAML tree, dotted.
    fn leaf_keys(value: &Value) -> Vec<String> {
        fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Mapping(m) if !m.is_empty() => {
                    for (k, child) in m {
                        let k = k.as_str().unwrap_or_default();
                        let key = if prefix.is_empty() {
                            k.to_string()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&key, child, out);
                    }
                }
                _ => out.push(prefix.to_string()),
            }
        }
        let mut out = Vec::new();
        walk("", value, &mut out);
        out
    }

    #[test]
    fn every_config_field_has_a_documented_key_and_back() {
        let leaves = leaf_keys(&serde_yaml::to_value(Config::default()).unwrap());
        for leaf in &leaves {
            assert!(
                find(leaf).is_some(),
                "config key {leaf} is missing from KEYS"
            );
        }
        for spec in KEYS {
            assert!(
                leaves.iter().any(|l| l == spec.key),
                "KEYS entry {} is not a config field",
                spec.key
            );
        }
    }

    #[test]
    fn flags_and_env_names_are_unique() {
        let mut flags: Vec<_> = KEYS.iter().map(|k| k.flag).collect();
        flags.sort();
        flags.dedup();
        assert_eq!(flags.len(), KEYS.len());
        assert_eq!(
            find("http.listen").unwrap().env(),
            "BOOTFACTORY_HTTP_LISTEN"
        );
    }
}
