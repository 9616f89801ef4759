#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests need (apt-get),
# then checks formatting and lints and runs every test. This is the command README.md and
# .ci/run use.
#
#   tests/run-all.sh            # everything
#   SKIP_INSTALL=1 tests/run-all.sh   # assume the packages are already there
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

cache="${BOOTFACTORY_CACHE:-$HOME/.cache/bootfactory}"
mkdir -p "$cache/apt-archives/partial"
# Reuse one target directory across clones and runs (CI builds from a fresh clone each time).
# Only this default one is ever pruned (below): a CARGO_TARGET_DIR of the caller's is theirs.
own_target=0
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    CARGO_TARGET_DIR="$cache/target"
    own_target=1
fi
export CARGO_TARGET_DIR
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Every run builds from a fresh clone, so incremental state is never reused: it only costs disk
# (it grew to 16 GB in the shared target directory).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The cached target directories only grow: each feature set, profile tweak, clone path or
# dependency bump leaves its own copy of ~45 test binaries (85-390 MB each) behind. A run that
# found the disk nearly full failed mid-build ("No space left on device"); so, before building,
# when the cache's build directories hold more than BOOTFACTORY_MAX_CACHE_GB (40) or its disk
# has less than BOOTFACTORY_MIN_FREE_GB (25) free, they are removed (they are only a cache: the
# run rebuilds what it needs, ~10 minutes more). Directories that do not exist yet (a fresh
# machine, no nightly toolchain) are skipped.
prune_build_cache() {
    [ "$own_target" = 1 ] || return 0
    local min_free_gb="${BOOTFACTORY_MIN_FREE_GB:-25}" max_cache_gb="${BOOTFACTORY_MAX_CACHE_GB:-40}"
    local dirs=() d free_gb used_gb
    for d in "$cache/target" "$cache/fuzz-target" "$cache/release-target"; do
        [ -d "$d" ] && dirs+=("$d")
    done
    [ "${#dirs[@]}" -gt 0 ] || return 0
    rm -rf "$cache/target/debug/incremental"
    free_gb="$(df -P -BG "$cache" | awk 'NR == 2 { sub("G", "", $4); print $4 + 0 }')"
    used_gb="$({ du -s -BG "${dirs[@]}" 2>/dev/null || true; } \
        | awk '{ sub("G", "", $1); n += $1 } END { print n + 0 }')"
    if [ "$free_gb" -lt "$min_free_gb" ] || [ "$used_gb" -gt "$max_cache_gb" ]; then
        echo "==> build cache ${used_gb} GB, ${free_gb} GB free on its disk: removing ${dirs[*]}"
        rm -rf "${dirs[@]}"
        free_gb="$(df -P -BG "$cache" | awk 'NR == 2 { sub("G", "", $4); print $4 + 0 }')"
        echo "    ${free_gb} GB free now"
    fi
}

# Debian packages the tests use:
#   golang-go, golang-gopkg-yaml.v3-dev  the schematic ID oracle (real go-yaml v3)
#   docker-registry                      a real upstream registry (CNCF distribution)
#   skopeo, podman                       real registry clients
#   cpio                                 byte-exact comparison for our cpio writer
#   kmod, squashfs-tools                 depmod for the modules.dep layer; fixture checks
#   iproute2, dnsmasq-base               network-namespace labs; the "office" DHCP server and
#                                        dnsmasq's TFTP/proxy-DHCP as benchmark peers
#   qemu-system-x86, ovmf, seabios,      the machines of the end-to-end boot test (UEFI PXE and
#   ipxe-qemu, busybox-static            SeaBIOS + iPXE NIC ROM) and their tiny userland
#   atftp, tftp-hpa, curl                real TFTP/HTTP clients
#   qemu-utils, zstd, xz-utils, gzip     qemu-img, zstd -d, xz -d, gzip -d read the disk images
#   pigz                                 (and a benchmark peer for .gz)
#   rpm, systemd, adduser                inspecting the .rpm; systemd-analyze for the unit;
#                                        the .deb's maintainer scripts
#   openssl, python3                     TLS tests (certificates, s_client); urllib's upload
#   systemd-boot-efi, binutils           a real systemd-stub for UKIs; objdump/objcopy read them
#   sbsigntool                           sbverify/sbsign: independent Authenticode checks
#   efitools                             cert-to-efi-sig-list/sign-efi-sig-list: Secure Boot .auth files
#   python3-cryptography                 an independent check of installer images' cosign signatures
#   fdisk, gdisk, dosfstools, mtools     sfdisk/sgdisk/fsck.vfat/mtools read disk images back
#   xfsprogs, grub-common, grub-pc-bin,  what GRUB and dual-boot disk images and ISOs are built with
#   grub-efi-amd64-bin                   (mkfs.xfs, grub-mkimage); xfs_db/xfs_repair read BOOT
#   xorriso, genisoimage                 xorriso's El Torito/system-area reports, isoinfo read ISOs back
#   chromium, chromium-driver            the web UI's tests in a real (headless) browser over WebDriver
#   qemu-system-arm, qemu-efi-aarch64    the arm64 machine of the boot test (qemu-system-aarch64,
#                                        AAVMF firmware PXE); its kernel and busybox are arm64
#                                        packages, downloaded and extracted (prepare_lab_arm64)
packages=(golang-go golang-gopkg-yaml.v3-dev docker-registry skopeo podman cpio kmod squashfs-tools
    iproute2 dnsmasq-base qemu-system-x86 ovmf seabios ipxe-qemu busybox-static atftp tftp-hpa curl
    rpm systemd adduser openssl python3 systemd-boot-efi binutils python3-cryptography sbsigntool efitools
    fdisk gdisk dosfstools mtools xfsprogs grub-common grub-pc-bin grub-efi-amd64-bin xorriso genisoimage
    qemu-utils zstd xz-utils gzip pigz chromium chromium-driver qemu-system-arm qemu-efi-aarch64)

install_packages() {
    local missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "==> apt-get install ${missing[*]}"
    local apt_opts=(-o "Dir::Cache::archives=$cache/apt-archives" -y -q --no-install-recommends)
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get "${apt_opts[@]}" install "${missing[@]}" \
        || { "${sudo[@]}" apt-get update -q && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get "${apt_opts[@]}" install "${missing[@]}"; }
}

# A real Debian kernel for the boot test: vmlinuz from the linux-image package that
# linux-image-amd64 points at, extracted once into the cache.
prepare_lab_kernel() {
    local lab="$cache/lab"
    [ -s "$lab/vmlinuz" ] && return 0
    mkdir -p "$lab"
    local pkg
    pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')"
    if [ -z "$pkg" ]; then
        apt-get update -q >/dev/null
        pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')"
    fi
    echo "==> extracting vmlinuz from $pkg"
    (cd "$lab" && rm -f linux-image-*.deb && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    dpkg-deb --fsys-tarfile "$lab"/linux-image-*.deb | tar -x -C "$lab" --wildcards './boot/vmlinuz-*'
    mv "$lab"/boot/vmlinuz-* "$lab/vmlinuz.tmp" && rmdir "$lab/boot" && mv "$lab/vmlinuz.tmp" "$lab/vmlinuz"
    rm -f "$lab"/linux-image-*.deb
}

# The arm64 machine of the boot test: the vmlinuz of the linux-image package linux-image-arm64
# points at (an EFI-stub Image: iPXE boots it as an EFI program) and busybox-static's static busybox, both
# arm64 packages. They are downloaded and extracted once into the cache, never installed; apt
# only needs the arm64 architecture in its indexes (dpkg --add-architecture).
prepare_lab_arm64() {
    local lab="$cache/lab"
    [ -s "$lab/vmlinuz-arm64" ] && [ -s "$lab/busybox-arm64" ] && return 0
    mkdir -p "$lab"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        echo "==> dpkg --add-architecture arm64 (package indexes only; nothing arm64 is installed)"
        "${sudo[@]}" dpkg --add-architecture arm64
    fi
    local pkg
    # Unknown until apt has the arm64 indexes (pipefail: the failing apt-cache is not an error).
    pkg="$(apt-cache depends linux-image-arm64:arm64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}' || true)"
    if [ -z "$pkg" ]; then
        "${sudo[@]}" apt-get update -q >/dev/null
        pkg="$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-/{print $2; exit}')"
    fi
    local tmp
    tmp="$(mktemp -d "$lab/arm64.XXXXXX")"
    echo "==> extracting vmlinuz from $pkg and busybox from busybox-static:arm64"
    (cd "$tmp" && apt-get download -q "$pkg" busybox-static:arm64 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    dpkg-deb --fsys-tarfile "$tmp"/linux-image-*.deb | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
    dpkg-deb --fsys-tarfile "$tmp"/busybox-static_*.deb | tar -x -C "$tmp" ./bin/busybox
    # bookworm's is an uncompressed Image; some distributions' arm64 vmlinuz is a gzip'ed one,
    # which iPXE cannot boot (it wants the EFI PE image inside).
    if gzip -t "$tmp"/boot/vmlinuz-* 2>/dev/null; then
        gzip -dc "$tmp"/boot/vmlinuz-* >"$tmp/Image" && mv "$tmp/Image" "$lab/vmlinuz-arm64"
    else
        mv "$tmp"/boot/vmlinuz-* "$lab/vmlinuz-arm64"
    fi
    mv "$tmp/bin/busybox" "$lab/busybox-arm64"
    rm -rf "$tmp"
}

# cargo-deb and cargo-generate-rpm, built once into the cache (crates.io).
install_packaging_tools() {
    local tools="$cache/tools"
    [ -x "$tools/bin/cargo-deb" ] && [ -x "$tools/bin/cargo-generate-rpm" ] && return 0
    echo "==> cargo install cargo-deb cargo-generate-rpm"
    CARGO_TARGET_DIR="$cache/tools-target" cargo install --locked --root "$tools" \
        cargo-deb@3.8.0 cargo-generate-rpm@0.21.1
}

[ "${SKIP_INSTALL:-0}" = 1 ] || install_packages
[ "${SKIP_INSTALL:-0}" = 1 ] || prepare_lab_kernel
[ "${SKIP_INSTALL:-0}" = 1 ] || prepare_lab_arm64
export BOOTFACTORY_LAB_KERNEL="${BOOTFACTORY_LAB_KERNEL:-$cache/lab/vmlinuz}"
export BOOTFACTORY_LAB_KERNEL_ARM64="${BOOTFACTORY_LAB_KERNEL_ARM64:-$cache/lab/vmlinuz-arm64}"
export BOOTFACTORY_LAB_BUSYBOX_ARM64="${BOOTFACTORY_LAB_BUSYBOX_ARM64:-$cache/lab/busybox-arm64}"

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi

prune_build_cache

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
# The shipped configuration alone (--all-targets builds the library with the test-support
# features of the self dev-dependency, which hides code only tests use) is checked by the
# release build below, which denies warnings: a second clippy here re-checked every dependency
# whose features differ (~5 min on a cold cache) for the same dead-code warnings.
echo "==> cargo test"
export BOOTFACTORY_REQUIRE_ORACLE=1 BOOTFACTORY_REQUIRE_TOOLS=1
# Library, binaries, integration tests and doc tests. Benchmarks (benches/, run with
# `cargo bench`) are compiled by clippy above but not run here: they take minutes and print
# figures rather than pass or fail.
cargo test --locked --lib --bins --tests
echo "==> doc tests"
cargo test --doc --locked
# Fuzz targets, briefly: the harnesses keep building and the corpora and regression inputs keep
# passing under the sanitizer (every target; fuzz/README.md).
echo "==> fuzz targets (cargo-fuzz, ${FUZZ_SECONDS:-15} s each; fuzz/run-ci.sh)"
if cargo +nightly --version >/dev/null 2>&1; then
    CARGO_TARGET_DIR="$cache/fuzz-target" FUZZ_TOOLS_DIR="$cache/tools" FUZZ_SEED="${FUZZ_SEED:-1}" \
        FUZZ_SECONDS="${FUZZ_SECONDS:-15}" sh fuzz/run-ci.sh
else
    echo "no nightly toolchain: fuzz targets not run (cargo test replayed their corpora)"
fi
echo "==> release: static binary, .deb, .rpm (packaging/release.sh)"
[ "${SKIP_INSTALL:-0}" = 1 ] || install_packaging_tools
export BOOTFACTORY_TOOLS="$cache/tools"
BOOTFACTORY_RELEASE_TARGET_DIR="$cache/release-target" packaging/release.sh "$cache/dist"
echo "==> package tests (dpkg -i, purge; rpm -qip/-qlp)"
BOOTFACTORY_FIXTURE_BIN="$CARGO_TARGET_DIR/debug/bootfactory-fixture" packaging/test-packages.sh "$cache/dist"
echo "==> all tests passed"
