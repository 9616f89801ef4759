#!/usr/bin/env bash
# Builds a release: the static bootfactory binary, the .deb and .rpm packages, and
# SHA256SUMS, into dist/ (or $1).
#
#   packaging/release.sh [OUT_DIR]
#
# Needs cargo-deb and cargo-generate-rpm (`cargo install cargo-deb cargo-generate-rpm`;
# tests/run-all.sh installs them into ~/.cache/bootfactory/tools). The binary is linked
# statically against glibc (`-C target-feature=+crt-static`; Debian's libc6-dev ships libc.a),
# with paths remapped and SOURCE_DATE_EPOCH from the last commit, so two builds of one commit
# on one toolchain give the same bytes.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
out="$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)"
target="${BOOTFACTORY_TARGET:-x86_64-unknown-linux-gnu}"
# A target directory of its own (different flags from the test builds, so sharing one would
# only make each invalidate the other).
export CARGO_TARGET_DIR="${BOOTFACTORY_RELEASE_TARGET_DIR:-$here/target/release-build}"
export PATH="${BOOTFACTORY_TOOLS:-$HOME/.cache/bootfactory/tools}/bin:$PATH"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
export BOOTFACTORY_COMMIT="${BOOTFACTORY_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}"
# With an explicit --target these flags reach only the shipped binary, not build scripts.
# -D warnings: the shipped configuration (no test-support features) must build without a
# warning, e.g. code only tests use (dependencies' lints are capped by cargo).
export RUSTFLAGS="-D warnings -C target-feature=+crt-static --remap-path-prefix=$here=/build/bootfactory --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"

echo "==> static binary ($target)"
cargo build --release --locked --target "$target" --bin bootfactory
bin="$CARGO_TARGET_DIR/$target/release/bootfactory"
# glibc's ldd says "not a dynamic executable" (static) or "statically linked" (static-pie).
if ! ldd "$bin" 2>&1 | grep -qE "not a dynamic executable|statically linked"; then
    echo "release: $bin is dynamically linked:" >&2
    ldd "$bin" >&2
    exit 1
fi
echo "ldd: $(ldd "$bin" 2>&1 | tr -d '\t')"
"$bin" --version

echo "==> --help reference"
{
    "$bin" --help
    for cmd in serve doctor completions "machine assign" "machine unassign" "machine list" "store verify" "store gc" \
        "schematic id" "schematic canonical" "config show" \
        "config keys" "mirror import" "mirror export" "mirror pull" "mirror list"; do
        printf '\n\n======== bootfactory %s ========\n\n' "$cmd"
        # shellcheck disable=SC2086
        "$bin" $cmd --help
    done
    printf '\n\n======== configuration keys ========\n\n'
    "$bin" config keys
} > "$CARGO_TARGET_DIR/$target/release/bootfactory-help.txt"

echo "==> man pages and shell completions (generated from the CLI definition)"
gen="$CARGO_TARGET_DIR/$target/release/generated"
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions"
"$bin" man --out "$gen/man"
# -n: no name or timestamp in the gzip header, so the packages stay reproducible.
gzip -9n "$gen/man"/*.1
"$bin" completions bash > "$gen/completions/bootfactory"
"$bin" completions zsh > "$gen/completions/_bootfactory"
"$bin" completions fish > "$gen/completions/bootfactory.fish"
ls "$gen/man" "$gen/completions"

echo "==> packages"
for tool in cargo-deb cargo-generate-rpm; do
    command -v "$tool" >/dev/null || { echo "release: $tool not found (cargo install $tool)" >&2; exit 1; }
done
rm -f "$out"/bootfactory*.deb "$out"/bootfactory*.rpm
cargo deb --no-build --no-strip --target "$target" --output "$out/"
cargo generate-rpm --target "$target" --target-dir "$CARGO_TARGET_DIR" --output "$out/"
cp "$bin" "$out/bootfactory-$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"version":"\([^"]*\)".*/\1/p' | head -1)-$target"

echo "==> checksums"
(cd "$out" && rm -f SHA256SUMS && sha256sum bootfactory* > SHA256SUMS && cat SHA256SUMS)
ls -la "$out"
echo "binary size: $(stat -c %s "$bin") bytes"
