#!/usr/bin/env bash
# Refreshes the iPXE binaries that `build.rs` embeds, from Debian's `ipxe` package.
#
#   ipxe/update-from-debian.sh [SUITE]      # default: trixie
#
# Needs a `deb` entry for SUITE (pin it below the machine's own release, see ipxe/README.md),
# then: downloads the package with apt, checks it against apt's signed index, extracts the
# binaries into ipxe/bin/, and rewrites ipxe/SHA256SUMS and ipxe/SOURCE. Commit all three.
set -euo pipefail
suite="${1:-trixie}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
apt-get download "ipxe/$suite"
deb="$(ls ipxe_*.deb)"
version="$(dpkg-deb -f "$deb" Version)"
dpkg-deb -x "$deb" root

# Our name           Debian's file                   Firmware
# undionly.kpxe      undionly.kpxe                   BIOS PXE (UNDI driver, keeps the NIC ROM's stack)
# ipxe.efi           ipxe-amd64.efi                  x86-64 UEFI, all iPXE drivers
# snponly.efi        snponly.efi                     x86-64 UEFI, firmware's SNP driver only
# ipxe-arm64.efi     ipxe-arm64.efi                  arm64 UEFI, all iPXE drivers + SNP
install -m 0644 root/usr/lib/ipxe/undionly.kpxe "$here/bin/undionly.kpxe"
install -m 0644 root/usr/lib/ipxe/ipxe-amd64.efi "$here/bin/ipxe.efi"
install -m 0644 root/usr/lib/ipxe/snponly.efi "$here/bin/snponly.efi"
install -m 0644 root/usr/lib/ipxe/ipxe-arm64.efi "$here/bin/ipxe-arm64.efi"

cd "$here"
(cd bin && sha256sum undionly.kpxe ipxe.efi snponly.efi ipxe-arm64.efi) > SHA256SUMS
{
    echo "package: ipxe"
    echo "version: $version"
    echo "suite: $suite"
    echo "deb-sha256: $(sha256sum "$work/$deb" | cut -d' ' -f1)"
} > SOURCE
echo "ipxe $version from $suite:"
cat SHA256SUMS
