#!/usr/bin/env bash
# Installs the built .deb on this machine and checks it like an operator would, then purges
# it; inspects the .rpm with rpm. Run as root after packaging/release.sh.
#
#   packaging/test-packages.sh [DIST_DIR]
set -euo pipefail
dist="$(cd "${1:-dist}" && pwd)"
deb="$(ls "$dist"/bootfactory_*.deb | head -1)"
rpm="$(ls "$dist"/bootfactory-*.rpm | head -1)"
fail() { echo "package test FAILED: $*" >&2; exit 1; }
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    dpkg --purge bootfactory >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "==> .deb metadata"
dpkg-deb --info "$deb" | sed -n '1,40p'
contents="$(dpkg-deb --contents "$deb")"
echo "$contents"
for f in ./usr/bin/bootfactory ./etc/bootfactory/config.yaml ./usr/lib/systemd/system/bootfactory.service \
    ./usr/lib/sysusers.d/bootfactory.conf ./usr/share/bootfactory/schematics/example.yaml \
    ./usr/share/doc/bootfactory/README.md ./usr/share/doc/bootfactory/bootfactory-help.txt \
    ./usr/share/man/man1/bootfactory.1.gz ./usr/share/man/man1/bootfactory-doctor.1.gz \
    ./usr/share/bash-completion/completions/bootfactory ./usr/share/zsh/vendor-completions/_bootfactory \
    ./usr/share/fish/vendor_completions.d/bootfactory.fish; do
    grep -q " $f\$" <<<"$contents" || fail "$f missing from $deb"
done
dpkg-deb -e "$deb" /tmp/bootfactory-deb-ctrl.$$
grep -qx /etc/bootfactory/config.yaml /tmp/bootfactory-deb-ctrl.$$/conffiles || fail "config.yaml is not a conffile"
rm -rf /tmp/bootfactory-deb-ctrl.$$

echo "==> dpkg -i"
dpkg --purge bootfactory >/dev/null 2>&1 || true
dpkg -i "$deb"
getent passwd bootfactory >/dev/null || fail "no bootfactory user"
[ "$(stat -c '%U:%G %a' /var/lib/bootfactory)" = "bootfactory:bootfactory 750" ] || fail "state dir: $(stat -c '%U:%G %a' /var/lib/bootfactory)"
[ "$(stat -c '%U:%G %a' /etc/bootfactory/config.yaml)" = "root:bootfactory 640" ] || fail "config: $(stat -c '%U:%G %a' /etc/bootfactory/config.yaml)"
[ "$(stat -c '%U %a' /usr/bin/bootfactory)" = "root 755" ] || fail "binary mode"
grep -qE "not a dynamic executable|statically linked" <<<"$(ldd /usr/bin/bootfactory 2>&1)" || fail "installed binary is dynamically linked"
grep -q "static" <<<"$(/usr/bin/bootfactory --version)" || fail "--version does not say static"
unit=/usr/lib/systemd/system/bootfactory.service
grep -qx 'AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW' "$unit" || fail "unit capabilities"
grep -qx 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW' "$unit" || fail "unit bounding set"
systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
# Enabled, not started: the wants symlink exists.
[ -L /etc/systemd/system/multi-user.target.wants/bootfactory.service ] || fail "service not enabled"
echo "exposure: $(systemd-analyze security --offline=true "$unit" 2>/dev/null | grep -o 'Overall exposure level.*')"

echo "==> man pages and completions are where man and the shells look"
if command -v man >/dev/null; then
    [ "$(man -w bootfactory)" = /usr/share/man/man1/bootfactory.1.gz ] || fail "man -w bootfactory: $(man -w bootfactory 2>&1)"
    MANPAGER=cat man bootfactory-doctor 2>/dev/null | grep -q -- "--json" || fail "man bootfactory-doctor does not render"
fi
# bash-completion loads /usr/share/bash-completion/completions/<command> on demand; sourcing
# it directly checks the same file.
bash -c 'source /usr/share/bash-completion/completions/bootfactory && complete -p bootfactory' | grep -q -- "-F _bootfactory bootfactory" \
    || fail "bash completion does not register"

echo "==> the installed binary serves with the packaged config, as the service user"
port=18931
# setpriv execs (no parent process in between), so SIGTERM reaches bootfactory itself.
setpriv --reuid bootfactory --regid bootfactory --init-groups -- /usr/bin/bootfactory serve --config /etc/bootfactory/config.yaml \
    --http-listen "127.0.0.1:$port" --offline >/tmp/bootfactory-pkg.$$.log 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { cat /tmp/bootfactory-pkg.$$.log; fail "no /healthz"; }
id=$(curl -sf -X POST --data-binary @/usr/share/bootfactory/schematics/example.yaml "http://127.0.0.1:$port/schematics")
echo "$id" | grep -q '"id":"' || fail "POST /schematics: $id"
[ "$(stat -c '%U %a' /var/lib/bootfactory/admin-token)" = "bootfactory 600" ] || fail "admin token file"
kill -TERM "$pid"; wait "$pid" || fail "serve did not stop cleanly on SIGTERM"
pid=""
rm -f /tmp/bootfactory-pkg.$$.log

if [ -n "${BOOTFACTORY_FIXTURE_BIN:-}" ]; then
    # README "Install as a service" → "First run", as an operator meets it: the service runs
    # as its own user; root's commands find /etc/bootfactory/config.yaml on their own and talk
    # to the service over its admin socket (no lock error, no token, nothing root-owned left).
    echo "==> an operator's first hour: import while serving, a refused assignment, warm, /pxe"
    [ -x "$BOOTFACTORY_FIXTURE_BIN" ] || fail "BOOTFACTORY_FIXTURE_BIN=$BOOTFACTORY_FIXTURE_BIN is not executable"
    work="$(mktemp -d)"
    "$BOOTFACTORY_FIXTURE_BIN" --out "$work/release" --version v1.11.6 >/dev/null
    tar -C "$work/release" -cf "$work/bundle.tar" .
    setpriv --reuid bootfactory --regid bootfactory --init-groups -- /usr/bin/bootfactory serve \
        --http-listen "127.0.0.1:$port" --offline >"$work/serve.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
        sleep 0.2
    done
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/serve.log"; fail "no /healthz"; }
    [ "$(curl -sf "http://127.0.0.1:$port/versions")" = "[]" ] || fail "/versions of an empty store is not []"
    bootfactory mirror import "$work/bundle.tar" >"$work/import.out" 2>&1 \
        || { cat "$work/import.out" "$work/serve.log"; fail "mirror import while serving"; }
    bootfactory mirror list | grep -q "ghcr.io/siderolabs/imager:v1.11.6" || fail "mirror list: no imager after the import"
    curl -sf "http://127.0.0.1:$port/versions" | grep -q '"v1.11.6"' || fail "/versions after the import"
    left="$(find /var/lib/bootfactory ! -user bootfactory | head -5)"
    [ -z "$left" ] || fail "files not owned by the service user: $left"
    schematic() {
        curl -sf -X POST --data-binary "customization: {systemExtensions: {officialExtensions: [$1]}}" \
            "http://127.0.0.1:$port/schematics" | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p'
    }
    bad="$(schematic siderolabs/nope)"; good="$(schematic siderolabs/gvisor)"
    [ -n "$bad" ] && [ -n "$good" ] || fail "POST /schematics"
    if bootfactory machine assign 52:54:00:12:34:56 --schematic "$bad" --version v1.11.6 >"$work/assign.out" 2>&1; then
        fail "an assignment whose extension is not in the catalog was accepted"
    fi
    grep -q "siderolabs/nope" "$work/assign.out" || { cat "$work/assign.out"; fail "the refusal does not name the extension"; }
    bootfactory machine assign 52:54:00:12:34:56 --schematic "$good" --version v1.11.6 >/dev/null \
        || fail "assigning a whole chain"
    bootfactory warm "$good" v1.11.6 >"$work/warm.out" 2>&1 || { cat "$work/warm.out"; fail "warm"; }
    grep -q "initramfs-amd64.xz" "$work/warm.out" || { cat "$work/warm.out"; fail "warm did not build the initramfs"; }
    curl -sf "http://127.0.0.1:$port/boot/52:54:00:12:34:56.ipxe" >/dev/null || fail "/boot script"
    curl -sf "http://127.0.0.1:$port/pxe/$good/v1.11.6/metal-amd64" | grep -q "initramfs-amd64.xz" || fail "/pxe script"
    curl -sf -o /dev/null "http://127.0.0.1:$port/image/$good/v1.11.6/initramfs-amd64.xz" || fail "the warmed initramfs"
    bootfactory doctor --offline >"$work/doctor.out" 2>&1 || { cat "$work/doctor.out"; fail "doctor on a healthy box"; }
    kill -TERM "$pid"; wait "$pid" || fail "serve did not stop cleanly on SIGTERM"
    pid=""
    # Without a service the same commands open the store themselves, as the data's owner.
    bootfactory mirror list | grep -q "ghcr.io/siderolabs/imager:v1.11.6" || fail "mirror list without a service"
    left="$(find /var/lib/bootfactory ! -user bootfactory | head -5)"
    [ -z "$left" ] || fail "files not owned by the service user after a direct command: $left"
    rm -rf "$work"
fi

echo "==> dpkg --purge"
dpkg --purge bootfactory
for p in /usr/bin/bootfactory /etc/bootfactory /var/lib/bootfactory /usr/lib/systemd/system/bootfactory.service \
    /usr/share/man/man1/bootfactory.1.gz /usr/share/bash-completion/completions/bootfactory \
    /etc/systemd/system/multi-user.target.wants/bootfactory.service; do
    [ ! -e "$p" ] || fail "$p left after purge"
done
! getent passwd bootfactory >/dev/null || fail "user left after purge"

echo "==> .rpm"
rpm -qip "$rpm"
rpm -qlp "$rpm" | tee /tmp/bootfactory-rpm-files.$$
for f in /usr/bin/bootfactory /etc/bootfactory/config.yaml /usr/lib/systemd/system/bootfactory.service \
    /usr/lib/sysusers.d/bootfactory.conf /usr/share/man/man1/bootfactory.1.gz \
    /usr/share/bash-completion/completions/bootfactory /usr/share/zsh/site-functions/_bootfactory \
    /usr/share/fish/vendor_completions.d/bootfactory.fish; do
    grep -qx "$f" /tmp/bootfactory-rpm-files.$$ || fail "$f missing from $rpm"
done
grep -qx /etc/bootfactory/config.yaml <<<"$(rpm -qp --configfiles "$rpm")" || fail "config.yaml is not a config file in the rpm"
grep -q "systemctl enable bootfactory.service" <<<"$(rpm -qp --scripts "$rpm")" || fail "rpm does not enable the service"
rm -f /tmp/bootfactory-rpm-files.$$
echo "package tests passed"
