#!/usr/bin/env python3
"""Generate tests/vectors/schematic-ids.json from the Go oracle.

Every expected value in the corpus (ok, canonical, id, error) is produced by
running tests/oracle/schematic-oracle (real gopkg.in/yaml.v3 v3.0.1). This
script only builds the *inputs*, runs the oracle once over all of them and
writes the results. It also checks the handful of published IDs written below
(upstream's pkg/schematic/schematic_test.go and earlier go-yaml runs, see
docs/image-factory-api.md, "Test vectors") and aborts if the oracle disagrees
with any of them.

Usage (from the repository root):

    python3 tests/oracle/gen-vectors.py            # rebuild oracle, rewrite corpus
    python3 tests/oracle/gen-vectors.py --check    # fail if the corpus is stale
    python3 tests/oracle/gen-vectors.py --report   # also print round-trip notes

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ORACLE_DIR = os.path.join(HERE, "schematic-oracle")
OUT = os.path.join(ROOT, "tests", "vectors", "schematic-ids.json")

EMPTY_ID = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"

# --------------------------------------------------------------------------
# case registry
# --------------------------------------------------------------------------

CASES: list[tuple[str, str]] = []
_NAMES: set[str] = set()

# name -> expected ID, as published (upstream tests and docs, earlier go-yaml runs).
EXPECTED_IDS: dict[str, str] = {}
# name -> expected canonical bytes, as published.
EXPECTED_CANONICAL: dict[str, str] = {}
# name -> substring the canonical form must contain (published snippets).
EXPECTED_SNIPPET: dict[str, str] = {}
# name -> expected error (published).
EXPECTED_ERROR: dict[str, str] = {}
# groups of case names whose inputs are written to mean the same schematic
# (checks the hand-written inputs, not go-yaml).
EQUIVALENT: list[list[str]] = []
# name -> the string value the embedding is supposed to decode to (sanity
# check that the *input* we wrote means what we think it means).
EMBEDDED: dict[str, tuple[str, str]] = {}


def add(name: str, doc: str, *, id: str | None = None, canonical: str | None = None,
        snippet: str | None = None, error: str | None = None) -> str:
    if name in _NAMES:
        raise SystemExit(f"duplicate case name: {name}")
    _NAMES.add(name)
    CASES.append((name, doc))
    if id is not None:
        EXPECTED_IDS[name] = id
    if canonical is not None:
        EXPECTED_CANONICAL[name] = canonical
    if snippet is not None:
        EXPECTED_SNIPPET[name] = snippet
    if error is not None:
        EXPECTED_ERROR[name] = error
    return name


def j(obj) -> str:
    """Compact JSON document (valid YAML flow) with raw UTF-8."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------
# YAML double-quoted scalar writer for the string embeddings
# --------------------------------------------------------------------------

def _yaml_printable(cp: int) -> bool:
    # libyaml's reader accepts exactly these code points raw.
    return (cp in (0x09, 0x0A, 0x0D) or 0x20 <= cp <= 0x7E or cp == 0x85
            or 0xA0 <= cp <= 0xD7FF or 0xE000 <= cp <= 0xFFFD or 0x10000 <= cp <= 0x10FFFF)


def ydq(s: str) -> str:
    """Encode s as a YAML double-quoted scalar that decodes back to exactly s.

    Line breaks, tabs, controls, NEL, LS/PS, NBSP, BOM and non-characters are
    escaped so that neither line folding nor the reader's character checks
    can alter the value; everything else stays raw UTF-8.
    """
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif cp < 0x20 or 0x7F <= cp <= 0xA0:
            out.append(f"\\x{cp:02x}")
        elif cp in (0x2028, 0x2029, 0xFEFF) or not _yaml_printable(cp):
            if cp > 0xFFFF:
                out.append(f"\\U{cp:08x}")
            else:
                out.append(f"\\u{cp:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# --------------------------------------------------------------------------
# 1. published vectors (upstream tests, then the ref/3.x groups of
#    docs/image-factory-api.md "Test vectors", go-yaml v3.0.1) + hand-picked extras
# --------------------------------------------------------------------------

def reference_vectors() -> None:
    # Upstream TestID (struct -> ID), expressed as equivalent input documents.
    add("ref/TestID/empty", "{}", id=EMPTY_ID, canonical="customization: {}\n")
    add("ref/TestID/config1", "customization:\n  extraKernelArgs: [noapic, nolapic]",
        id="9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c",
        canonical="customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n")
    add("ref/TestID/meta", "customization:\n  meta:\n    - key: 10\n      value: foo\n",
        id="d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f",
        canonical="customization:\n    meta:\n        - key: 10\n          value: foo\n")
    add("ref/TestID/secureboot", "customization:\n  secureboot:\n    includeWellKnownCertificates: true\n",
        id="fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6",
        canonical="customization:\n    secureboot:\n        includeWellKnownCertificates: true\n")
    add("ref/TestID/4k-sector-disk-image", "customization:\n  diskImage:\n    sectorSize: 4096\n",
        id="92833e9ddd9bb9e11b2464fa5525429f01866306d52ebd882ee08d7918f6d1ea",
        canonical="customization:\n    diskImage:\n        sectorSize: 4096\n")

    # Upstream TestUnmarshalID, inputs verbatim.
    tu = [
        ("empty-flow-map", "{}", EMPTY_ID),
        ("customization-empty", "customization: {}", EMPTY_ID),
        ("customization-empty-extraKernelArgs", 'customization: {"extraKernelArgs": []}', EMPTY_ID),
        ("extraKernelArgs", '{"customization": {"extraKernelArgs": ["noapic", "nolapic"]}}',
         "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c"),
        ("extraKernelArgs-empty-systemExtensions",
         '{"customization": {"extraKernelArgs": ["noapic", "nolapic"], "systemExtensions": {}}}',
         "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c"),
        ("meta", '{"customization": {"meta": [{"key": 10, "value": "foo"}], "extraKernelArgs": [], "systemExtensions": {}}}',
         "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f"),
        ("overlay", '{"overlay": {"name": "rpi_generic", "image": "siderolabs/sbc-raspberrypi"}}',
         "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9"),
        ("overlay-empty-customization",
         '{"overlay": {"name": "rpi_generic", "image": "siderolabs/sbc-raspberrypi"},"customization":{}}',
         "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9"),
        ("secureboot", '{"customization":{"secureboot": {"includeWellKnownCertificates": true}}}',
         "fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6"),
    ]
    for n, doc, i in tu:
        add(f"ref/TestUnmarshalID/{n}", doc, id=i)
    EXPECTED_CANONICAL["ref/TestUnmarshalID/overlay"] = \
        "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\ncustomization: {}\n"

    add("ref/docs-api-vga791", "customization:\n  extraKernelArgs: [vga=791]",
        id="eea1f9534c46d95c4715a2f13d17eacb927c13a42ef087c79b22c3bd0c49d073",
        canonical="customization:\n    extraKernelArgs:\n        - vga=791\n")

    # ref/3.5: additional vectors computed with go-yaml v3.0.1 (quoting, order).
    def ext(lst):
        return j({"customization": {"systemExtensions": {"officialExtensions": lst}}})

    def eka(lst):
        return j({"customization": {"extraKernelArgs": lst}})

    def emc(s):
        return j({"customization": {"embeddedMachineConfiguration": s}})

    add("ref/3.5/ext-qemu-guest-agent",
        '{"customization":{"systemExtensions":{"officialExtensions":["siderolabs/qemu-guest-agent"]}}}',
        id="ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515",
        canonical="customization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/qemu-guest-agent\n")
    add("ref/3.5/ext-iscsi-util-linux", ext(["siderolabs/iscsi-tools", "siderolabs/util-linux-tools"]),
        id="613e1592b2da41ae5e265e8789429f22e121aab91cb4deb6bc3c0b6262961245")
    add("ref/3.5/ext-gvisor-amd-ucode", ext(["siderolabs/gvisor", "siderolabs/amd-ucode"]),
        id="a993cf18ef6a65e3fc6d2f651c0363981b6b2e823829ad95a2557cfc97ca6595",
        snippet="            - siderolabs/gvisor\n            - siderolabs/amd-ucode\n")
    add("ref/3.5/ext-amd-ucode-gvisor", ext(["siderolabs/amd-ucode", "siderolabs/gvisor"]),
        id="ed510afbbd542b252bf618c09ac0d3f4ad8711c6ce752ebafa91c0779836a5c0")
    add("ref/3.5/ext-gvisor-duplicate", ext(["siderolabs/gvisor", "siderolabs/gvisor"]),
        id="9db19b9be1e63413a4cd9c5e255a756ecda3a74470f647850182cd92577e2e50")
    add("ref/3.5/ext-amd-ucode-gvisor-gasket",
        ext(["siderolabs/amd-ucode", "siderolabs/gvisor", "siderolabs/gasket-driver"]),
        id="51ff3e49313773332729a5c04e57af0dbe2e6d3f65ff638e6d4c3a05065fefff")
    add("ref/3.5/eka-nolapic-nomodeset", eka(["nolapic", "nomodeset"]),
        id="e0fb1129bbbdfb5d002e94af4cdce712a8370e850950a33a242d4c3f178c532d")
    add("ref/3.5/bootloader-sd-boot", '{"customization":{"bootloader":"sd-boot"}}',
        id="9ed5fecdacb36b5c5427b87d409f1065cfb2df69b0f71c58b868d9d466d8dab3",
        canonical="customization:\n    bootloader: sd-boot\n")
    add("ref/3.5/bootloader-grub", '{"customization":{"bootloader":"grub"}}',
        id="39d496b2cbdb6265d3b714514c5334bf010f1b4d31b23b9e38c80fb2f3ad7ecb",
        canonical="customization:\n    bootloader: grub\n")
    add("ref/3.5/bootloader-none", "customization: {bootloader: none}", id=EMPTY_ID,
        canonical="customization: {}\n")
    add("ref/3.5/meta-0xa-braces-and-eka",
        'customization:\n  extraKernelArgs: [net.ifnames=0]\n  meta: [{key: 0xa, value: "{}"}]\n',
        id="43331184cb3ee9d54c58eb9ed0d3d1e96861fbc62b8dc3d5cf17e433aa387b52",
        canonical="customization:\n    extraKernelArgs:\n        - net.ifnames=0\n    meta:\n"
                  "        - key: 10\n          value: '{}'\n")
    add("ref/3.5/meta-externalIPs",
        j({"customization": {"meta": [{"key": 10, "value": '{"externalIPs":["1.2.3.4"]}'}]}}),
        id="fe866116408a5a13dab7d5003eb57a00954ea81ebeec3fbbcd1a6d4462a00036",
        canonical="customization:\n    meta:\n        - key: 10\n          value: '{\"externalIPs\":[\"1.2.3.4\"]}'\n")
    add("ref/3.5/secureboot-enrollKeys-force",
        "customization: {secureboot: {enrollKeys: force, includeWellKnownCertificates: true}}",
        id="51e6baa0e88e8c3517231638007ba433f3fdde58a21c303221928f4cd7796036",
        canonical="customization:\n    secureboot:\n        enrollKeys: force\n        includeWellKnownCertificates: true\n")
    add("ref/3.5/emc-hostname-config",
        emc("apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: my-custom-hostname\n"),
        id="746ba50d4774a3d0b55b86f6a3adb9d156f7c4849dcbe1b93a76b06302d62951",
        canonical="customization:\n    embeddedMachineConfiguration: |\n        apiVersion: v1alpha1\n"
                  "        kind: HostnameConfig\n        hostname: my-custom-hostname\n")
    add("ref/3.5/emc-hostname-config-no-final-newline",
        emc("apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: my-custom-hostname"),
        id="9fdd24ff9b8247e11f1934a3aa708615288783b5b1973c7ebef46c468f0fadbc")
    add("ref/3.5/emc-x-two-newlines", emc("x\n\n"),
        id="72ecb7e0254c6340e60d71f506ef6926d6f752747cde021028da26a23f52dac4",
        canonical="customization:\n    embeddedMachineConfiguration: |+\n        x\n\n")
    add("ref/3.5/emc-indented-first-line", emc("  indented first\nsecond\n"),
        id="bb940ecfba56573580f7ddf44d24ac4af5fb70fe941156dc50fb0fc22805814b",
        canonical="customization:\n    embeddedMachineConfiguration: |4\n          indented first\n        second\n")
    add("ref/3.5/emc-trailing-space-line", emc("a: 1 \nb: 2\n"),
        id="ca357c5f1271f962b48d3a100bc45fb12d77aee07020a417c6d3dd5da88085ba",
        canonical="customization:\n    embeddedMachineConfiguration: \"a: 1 \\nb: 2\\n\"\n")
    add("ref/3.5/emc-integration-test-slash-n",
        emc("apiVersion: v1alpha1/nkind: HostnameConfig/nhostname: my-custom-hostname/nauto: off"),
        id="79312a00a1ccfee2c4ecad20fcb972ef75fce4e62053384d97885de26852c413",
        canonical="customization:\n    embeddedMachineConfiguration: 'apiVersion: v1alpha1/nkind: "
                  "HostnameConfig/nhostname: my-custom-hostname/nauto: off'\n")
    add("ref/3.5/eka-console-colon-hash-lead",
        eka(["console=ttyS0,115200n8", "talos.dashboard.disabled=1", "a: b", "#x", " lead"]),
        id="7491276f3f8678990ada9cc6301cdabc04aef7822906072f11c213fcf0b1c835",
        snippet="        - console=ttyS0,115200n8\n        - talos.dashboard.disabled=1\n"
                "        - 'a: b'\n        - '#x'\n        - ' lead'\n")
    add("ref/3.5/eka-true-123-space-dash", eka(["true", "123", "foo bar", "-"]),
        id="1c097da3259f50dec49dd084edb6e3b9846a8b3189e5a13e790cd50d82a1af35",
        snippet="        - \"true\"\n        - \"123\"\n        - foo bar\n        - '-'\n")
    add("ref/3.5/eka-empty-and-x", eka(["", "x"]),
        id="51ab120e4bcff00ebac84bcecea4c779d3e9f575737234cc4cba7818bb2a4024",
        snippet="        - \"\"\n        - x\n")
    add("ref/3.5/eka-quotes", eka(["a'b", 'a"b', 'key="quoted value"']),
        id="398f960c74365ac301fa666b29b33b82add4a79648a989f78e187da5a979ca2c",
        snippet="        - a'b\n        - a\"b\n        - key=\"quoted value\"\n")
    add("ref/3.5/eka-unicode-emoji", eka(["ünïcödé", "emoji😀"]),
        id="e13372de0f324879846966e838419edc10efe5720d2dae7320d5c77be1dcc2b4",
        snippet="        - ünïcödé\n        - \"emoji\\U0001F600\"\n")
    add("ref/3.5/meta-key-010-value-123", "customization:\n  meta: [{key: 010, value: 123}]\n",
        id="d343be06d4dfaff15379c9d225a7ec147ac2315f1db9825c2d4e6a44f5dbdbdb",
        snippet="        - key: 8\n          value: \"123\"\n")
    add("ref/3.5/meta-key-0-empty-value", j({"customization": {"meta": [{"key": 0, "value": ""}]}}),
        id="91e6a29add7dfa6f7cb57843fbdccccbba2105910982ddac0a48733a2552d9b7",
        snippet="        - key: 0\n          value: \"\"\n")
    add("ref/3.5/overlay-options-zeta-alpha",
        'overlay: {name: rpi_generic, image: siderolabs/sbc-raspberrypi, options: {zeta: 1, alpha: "x"}}',
        id="6f871154cd654aa7b2bc1249f67a001e75316100d6956faa3f616cc95601b930",
        canonical="overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\n    options:\n"
                  "        alpha: x\n        zeta: 1\ncustomization: {}\n")
    add("ref/3.5/overlay-options-configTxtAppend-list",
        j({"overlay": {"name": "rpi_generic", "image": "siderolabs/sbc-raspberrypi",
                       "options": {"configTxtAppend": "dtoverlay=vc4-kms-v3d\n",
                                   "list": [1, "two", {"b": 2, "a": 1}]}}}),
        id="f7f8e18704bed14846d31c6f50fd2c4627b89756ae0697a2bbdaf68f3b3dddc0",
        canonical="overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\n    options:\n"
                  "        configTxtAppend: |\n            dtoverlay=vc4-kms-v3d\n        list:\n"
                  "            - 1\n            - two\n            - a: 1\n              b: 2\ncustomization: {}\n")
    add("ref/3.5/overlay-empty-image", '{"overlay":{"name":"rpi_generic","image":""}}',
        id="8d2f83ce7c6b3b938ee8ae1c6c0951155d7a2c8128b05259614b416205ea33a4",
        canonical="overlay:\n    image: \"\"\n    name: rpi_generic\ncustomization: {}\n")
    add("ref/3.5/everything",
        '{"customization":{"extraKernelArgs":["noapic","nolapic"],"systemExtensions":{"officialExtensions":'
        '["siderolabs/gvisor"]},"bootloader":"dual-boot","secureboot":{"includeWellKnownCertificates":true},'
        '"diskImage":{"sectorSize":4096},"meta":[{"key":10,"value":"foo"}],"embeddedMachineConfiguration":"x"},'
        '"overlay":{"name":"rpi_generic","image":"siderolabs/sbc-raspberrypi"}}',
        id="6bbf952bd5a88cae0d6a1d1fb5a45145a37135f773602eedcece95091d55f626",
        canonical="overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\ncustomization:\n"
                  "    embeddedMachineConfiguration: x\n    extraKernelArgs:\n        - noapic\n        - nolapic\n"
                  "    meta:\n        - key: 10\n          value: foo\n    systemExtensions:\n"
                  "        officialExtensions:\n            - siderolabs/gvisor\n    bootloader: dual-boot\n"
                  "    secureboot:\n        includeWellKnownCertificates: true\n    diskImage:\n"
                  "        sectorSize: 4096\n")
    add("ref/3.5/owner-alice", '{"owner":"alice"}',
        id="325e789382e85e76ab77e38cb320a816e2c9550cb5afe960b21f75e06605e2e9",
        canonical="owner: alice\ncustomization: {}\n")
    add("ref/3.5/secureboot-enrollKeys-off", '{"customization":{"secureboot":{"enrollKeys":"off"}}}',
        id="27e859ebfe0bd0bb6c9a53595770359cbafaa9fc7ef0059c046435c91e0db8c4",
        snippet="        enrollKeys: \"off\"\n")
    add("ref/3.5/eka-yes-no-on-null-tilde-float-hex-ipv6",
        eka(["yes", "no", "on", "null", "~", "1.5", "0x10", "2001:db8::1"]),
        id="bd728ecc7e0eef2b741a82908e44e9d9f1c1b987ca6992d5f7d4d06da989d64b",
        snippet="        - \"yes\"\n        - \"no\"\n        - \"on\"\n        - \"null\"\n        - \"~\"\n"
                "        - \"1.5\"\n        - \"0x10\"\n        - 2001:db8::1\n")
    add("ref/3.5/eka-yaml11-bools-mixed-case", eka(["y", "n", "Y", "NO", "True", "FALSE", "Off"]),
        id="72cc46f6c1dacd572a486f0b0631f3bf61cf8d833530a06cbcf8967d81eca1d7",
        snippet="        - \"y\"\n        - \"n\"\n        - \"Y\"\n        - \"NO\"\n        - \"True\"\n"
                "        - \"FALSE\"\n        - \"Off\"\n")
    add("ref/3.5/eka-base60-1-20", eka(["1:20"]), snippet='        - "1:20"\n')
    add("ref/3.5/eka-merge-key-string", eka(["<<"]), snippet="        - <<\n")
    add("ref/3.2/bootloader-auto-rejected", "customization: {bootloader: auto}",
        error="auto does not belong to BootloaderKind values")
    add("ref/3.2/empty-input", "", error="EOF")

    # Hand-picked extra vectors.
    add("brief/customization-empty", "customization: {}", id=EMPTY_ID)
    add("brief/empty-map", "{}", id=EMPTY_ID)
    add("brief/customization-empty-extraKernelArgs", 'customization: {"extraKernelArgs": []}', id=EMPTY_ID)
    add("brief/eka-noapic-nolapic", "customization:\n  extraKernelArgs: [noapic, nolapic]\n",
        id="9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c")
    add("brief/eka-nolapic-nomodeset", "customization:\n  extraKernelArgs: [nolapic, nomodeset]\n",
        id="e0fb1129bbbdfb5d002e94af4cdce712a8370e850950a33a242d4c3f178c532d")
    add("brief/meta-10-foo", "customization:\n  meta: [{key: 10, value: foo}]\n",
        id="d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f")
    add("brief/meta-externalIPs", "customization:\n  meta:\n    - key: 10\n      value: '{\"externalIPs\":[\"1.2.3.4\"]}'\n",
        id="fe866116408a5a13dab7d5003eb57a00954ea81ebeec3fbbcd1a6d4462a00036")
    add("brief/ext-i915-intel-ucode",
        "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/i915-ucode, siderolabs/intel-ucode]\n")
    add("brief/ext-amd-ucode-gvisor-gasket",
        "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/amd-ucode\n"
        "      - siderolabs/gvisor\n      - siderolabs/gasket-driver\n",
        id="51ff3e49313773332729a5c04e57af0dbe2e6d3f65ff638e6d4c3a05065fefff")
    add("brief/overlay-rpi-generic", "overlay:\n  name: rpi_generic\n  image: siderolabs/sbc-raspberrypi\n",
        id="ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9")
    add("brief/overlay-rpi-generic-customization-empty",
        "overlay:\n  name: rpi_generic\n  image: siderolabs/sbc-raspberrypi\ncustomization: {}\n",
        id="ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9")
    add("brief/secureboot-includeWellKnownCertificates",
        "customization:\n  secureboot:\n    includeWellKnownCertificates: true\n",
        id="fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6")
    add("brief/diskImage-4096", "customization:\n  diskImage:\n    sectorSize: 4096\n",
        id="92833e9ddd9bb9e11b2464fa5525429f01866306d52ebd882ee08d7918f6d1ea")
    add("brief/realistic-metal-controlplane",
        "customization:\n"
        "  extraKernelArgs: [gfxmode=1280x1024, \"console=ttyS0,115200\", net.ifnames=0, talos.platform=metal]\n"
        "  systemExtensions:\n"
        "    officialExtensions: [siderolabs/amd-ucode, siderolabs/fuse3, siderolabs/intel-ucode, "
        "siderolabs/iscsi-tools, siderolabs/qemu-guest-agent, siderolabs/tailscale, siderolabs/util-linux-tools]\n"
        "  meta:\n"
        "    - key: 12\n"
        "      value: |\n"
        "        machineLabels:\n"
        "          env: prod\n"
        "          type: controlplane\n",
        id="67fccca75e17620470675a886ee22dbcf05901de13a156a242a5b2f9a6f04a6e")


# --------------------------------------------------------------------------
# 2. string quoting: each string embedded in 5 positions
# --------------------------------------------------------------------------

def quoting_strings() -> list[tuple[str, str]]:
    """(label, string) pairs; labels are unique and readable."""
    out: list[tuple[str, str]] = []
    seen_labels: set[str] = set()
    seen_values: set[str] = set()

    def s(value: str, label: str | None = None, group: str = "misc") -> None:
        if value in seen_values:
            return
        if label is None:
            label = json.dumps(value, ensure_ascii=True)[1:-1]
            if label == "":
                label = "<empty>"
        label = f"{group}/{label}"
        if label in seen_labels:
            raise SystemExit(f"duplicate string label {label}")
        seen_values.add(value)
        seen_labels.add(label)
        out.append((label, value))

    # --- booleans / nulls (YAML 1.1 + 1.2), case variants -------------------
    for w in ["y", "Y", "yes", "Yes", "YES", "yEs", "n", "N", "no", "No", "NO", "nO",
              "true", "True", "TRUE", "tRUE", "TrUe", "false", "False", "FALSE", "fALSE",
              "on", "On", "ON", "oN", "off", "Off", "OFF", "oFF",
              "null", "Null", "NULL", "nULL", "NuLL", "~", "~~", "Nil", "nil", "none", "None",
              "yes ", " no", "true1", "y1"]:
        s(w, group="bool-null")

    # --- integers --------------------------------------------------------------
    for w in ["0", "00", "01", "010", "08", "09", "0777", "-010", "+010", "1", "-1", "+1", "-0", "+0",
              "123", "1_000", "1__0", "_1", "1_", "+1_0", "0x1A", "0X1A", "0x1a", "0x", "0xg", "-0x1A", "+0x1A",
              "0x_1A", "0o17", "0O17", "0o8", "0o", "-0o17", "0b101", "0B101", "0b2", "0b", "-0b101", "0b1_0",
              "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
              "18446744073709551615", "18446744073709551616", "99999999999999999999999",
              "0x7FFFFFFFFFFFFFFF", "0x8000000000000000", "0xFFFFFFFFFFFFFFFF", "0x10000000000000000",
              "0o1777777777777777777777", "0o2000000000000000000000",
              "1,000", "1 000", "12e", "0x1.8p1"]:
        s(w, group="int")

    # --- floats ------------------------------------------------------------------
    for w in ["1.", ".5", "-.5", "+.5", "1.0", "1.5", "-1.5", "0.1", "1.50", "1e3", "1E3", "1e+3", "1e-3",
              "1.5e3", "-1e3", "1e999", "-1e999", "1e", "e3", "1_000.5", "1.2.3", ".", "..", "-.", "+.",
              ".inf", ".Inf", ".INF", ".iNf", "+.inf", "-.inf", "-.Inf", "-.INF", "inf", "Inf", "infinity",
              "Infinity", "-Infinity", ".nan", ".NaN", ".NAN", ".nAn", "nan", "NaN", "-.nan", "+.nan",
              "0.", "-0.0", "6.8523015e+5", "685.230_15e+03", "685_230.15", "1e1_0", "0x1p3", "1.e3", ".e3"]:
        s(w, group="float")

    # --- timestamps ---------------------------------------------------------------
    for w in ["2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14T21:59:43.10Z",
              "2001-12-14 21:59:43.10", "2001-12-14 21:59:43.10 -5", "2001-12-14T21:59:43Z",
              "2001-12-14T21:59:43", "2001-12-15 2:59:43.10", "2002-12-14", "2001-02-30", "2001-1-2",
              "2001-01-2", "2001-13-01", "9999-99-99", "0000-00-00", "20011214", "2001-12-14T25:00:00Z",
              "2001-12-14 ", "2001-12", "2001", "12:30", "12:30:45", "2001-12-14T21:59", "1-2-3",
              "2001-12-14t21:59:43.10", "2001-12-14T21:59:43.10+05:30"]:
        s(w, group="timestamp")

    # --- base 60 / merge / misc YAML 1.1 ------------------------------------------
    for w in ["1:20", "190:20:30", "1:20.5", "-1:20", "+1:20", "1:2", "12:60", "1:20:", ":20", "1::20",
              "0:0", "2001:db8::1", "::1", "fe80::1%eth0", "<<", "<", "<<<", "<< ", "=", "==", "!!str"]:
        s(w, group="yaml11")

    # --- whitespace -------------------------------------------------------------
    for w, lab in [("", "empty"), (" ", "space"), ("  ", "two-spaces"), ("\t", "tab"), (" \t ", "space-tab-space"),
                   (" x", "leading-space"), ("x ", "trailing-space"), (" x ", "both-spaces"),
                   ("  x", "two-leading-spaces"), ("\tx", "leading-tab"), ("x\t", "trailing-tab"),
                   ("a\tb", "inner-tab"), ("a  b", "double-inner-space"), ("a b c", "inner-spaces"),
                   ("\u00a0", "nbsp-only"), ("\u3000", "ideographic-space-only"), ("\u2003", "em-space-only"),
                   (" \n ", "space-newline-space"), ("\t\n", "tab-newline"), ("\n\t", "newline-tab"),
                   ("   ", "three-spaces"), ("x\u00a0", "trailing-nbsp"), ("\u00a0x", "leading-nbsp")]:
        s(w, lab, group="whitespace")

    # --- indicator characters ---------------------------------------------------------
    names = {"-": "dash", "?": "question", ":": "colon", ",": "comma", "[": "lbracket", "]": "rbracket",
             "{": "lbrace", "}": "rbrace", "#": "hash", "&": "amp", "*": "star", "!": "bang", "|": "pipe",
             ">": "gt", "'": "squote", '"': "dquote", "%": "percent", "@": "at", "`": "backtick"}
    for c, nm in names.items():
        s(c, f"{nm}-alone", group="indicator")
        s(c + "x", f"{nm}-start", group="indicator")
        s(c + " x", f"{nm}-start-space", group="indicator")
        s("x" + c + "y", f"{nm}-middle", group="indicator")
        s("x " + c + " y", f"{nm}-middle-spaced", group="indicator")
        s("x" + c, f"{nm}-end", group="indicator")
        s(c + c, f"{nm}-double", group="indicator")
    for w in ["- x", "? x", "x: y", "x:", "x: ", "x:y", "x #y", "x#y", "x #", "#", "x :y", "x ?", "x -",
              "---", "...", "--- x", "... x", "----", "....", "-- x", "---x", "...x", "x ---",
              "-1", "-x", "--x", "-.x", "?x", ":x", ":: x", "a::b", "a, b", "a,b", "[a]", "{a: b}", "a]",
              "a}", "&a b", "*a", "!a", "!!a", "%YAML 1.2", "@a", "`a`", "|-", ">-", "x|y", "x>y",
              "http://example.com/a?b=c#d", "C:\\path", "key=value", "a=b c=d", "~x", "x~", "=x",
              "'", "''", "'a'", "\"a\"", "\"", "\"\"", "it's", "a'b'c", 'say "hi"', "'\"", "\"'",
              "\\", "\\\\", "a\\b", "\\n", "\\t", "\\x41", "\\u0041", "end\\"]:
        s(w, group="syntax")

    # --- unicode -----------------------------------------------------------------
    uni = [
        ("ünïcödé", "latin1-letters"), ("日本語", "cjk"), ("Привет", "cyrillic"), ("é", "e-acute-precomposed"),
        ("e\u0301", "e-combining-acute"), ("\u0301x", "leading-combining-mark"), ("x\u0301", "trailing-combining-mark"),
        ("😀", "emoji-only"), ("a😀b", "emoji-middle"), ("emoji😀", "emoji-end"), ("👨‍👩‍👧", "emoji-zwj-family"),
        ("🇩🇪", "flag-regional-indicators"), ("\U00010000", "U+10000"), ("\U0010FFFF", "U+10FFFF"),
        ("\U0001D11E", "musical-symbol-g-clef"),
        ("\ufeff", "bom-only"), ("\ufeffx", "bom-leading"), ("a\ufeffb", "bom-middle"),
        ("\u0085", "nel-only"), ("a\u0085b", "nel-middle"), ("a\u0085", "nel-trailing"),
        ("\u2028", "line-separator-only"), ("a\u2028b", "line-separator-middle"), ("a\u2029b", "paragraph-separator-middle"),
        ("a\u00a0b", "nbsp-middle"), ("\u200b", "zero-width-space"), ("a\u200db", "zwj-middle"),
        ("\u00ad", "soft-hyphen"), ("\ufffd", "replacement-char"), ("\ufffe", "U+FFFE-nonchar"), ("\uffff", "U+FFFF-nonchar"),
        ("\ue000", "private-use-E000"), ("\ud7ff", "U+D7FF"), ("\u00a1", "inverted-exclamation"),
        ("\u00ff", "y-diaeresis"), ("\u0100", "A-macron"), ("\u2603", "snowman"), ("\u202e", "rtl-override"),
        ("\u05e9\u05dc\u05d5\u05dd", "hebrew"), ("\u0627\u0644\u0633\u0644\u0627\u0645", "arabic"),
        ("\x00", "nul"), ("a\x00b", "nul-middle"), ("\x01", "soh"), ("\x07", "bel"), ("\x08", "backspace"),
        ("\x0b", "vertical-tab"), ("\x0c", "form-feed"), ("\x1b[0m", "ansi-escape"), ("\x1f", "unit-separator"),
        ("\x7f", "del"), ("a\x7fb", "del-middle"), ("\x80", "c1-80"), ("\x9f", "c1-9f"), ("a\x9bb", "c1-csi-middle"),
        ("\x0b\x0c", "vt-ff"), ("x\x00", "trailing-nul"),
    ]
    for w, lab in uni:
        s(w, lab, group="unicode")

    # --- characters that only show their escape form inside double quotes ------
    mixed = [
        ("\t\u00a0", "tab-nbsp"), ("\t\u0085", "tab-nel"), ("\t\u2028\u2029", "tab-ls-ps"), ("\t\u00e9", "tab-e-acute"),
        ("\t\u65e5", "tab-cjk"), ("\t'\"\\", "tab-quotes-backslash"), ("\x00\u00ff", "nul-y-diaeresis"),
        ("\ufeff\u00a0\u0085\u2028\u2029\t\"\\", "bom-then-nbsp-nel-ls-ps-tab-quote"),
        ("\t\x7f\x80\u00a0\u00a1", "tab-del-c1-nbsp-iexcl"), ("\t\ufffd\ufffe", "tab-fffd-fffe"),
        ("\t\ue000", "tab-private-use"), ("\ufeff\u00e9\U0001F600 x", "bom-then-nonascii"),
        ("\ufeff\ufeff", "bom-bom"), ("a\n\ufeffb", "bom-after-newline"), ("a\u2028", "ls-trailing"),
        ("\u2028a", "ls-leading"), ("- \t", "dash-space-tab"), ("'\t", "squote-tab"), ("# a\tb", "hash-inner-tab"),
        ("#" + " ".join(["w"] * 400), "hash-then-long-with-spaces"), ("'" + "x " * 100, "squote-long-with-spaces"),
        ("a '" + "b " * 100, "long-single-quoted-with-quote"), ("x: " + "y " * 100 + "z", "long-colon-space"),
        ("\t" + "w " * 100 + "z", "long-double-quoted-with-spaces"),
    ]
    for w, lab in mixed:
        s(w, lab, group="escapes")

    # --- long strings ---------------------------------------------------------------
    s("a" * 80, "80-a", group="long")
    s("a" * 128, "128-a", group="long")
    s("a" * 129, "129-a", group="long")
    s("a" * 200, "200-a", group="long")
    s("x" * 5000, "5000-x", group="long")
    s(" ".join(["word"] * 40), "200ish-with-spaces", group="long")
    s(" ".join(["lorem", "ipsum", "dolor", "sit", "amet"] * 200), "5000ish-with-spaces", group="long")
    s(("k=v " * 50).strip(), "kernel-args-like-with-spaces", group="long")
    s("a " * 100, "200-with-trailing-space", group="long")
    s("é" * 200, "200-e-acute", group="long")
    s("😀" * 100, "100-emoji", group="long")
    s(("line " * 30 + "\n") * 20, "multiline-long-lines", group="long")
    s("y" * 1023 + " " + "z" * 1023, "2047-one-space", group="long")

    # --- multi-line strings ---------------------------------------------------------
    ml = [
        ("a\nb", "no-trailing-newline"), ("a\nb\n", "one-trailing-newline"), ("a\nb\n\n", "two-trailing-newlines"),
        ("a\nb\n\n\n", "three-trailing-newlines"), ("a\n", "single-line-newline"), ("a\n\n", "single-line-two-newlines"),
        ("\n", "only-newline"), ("\n\n", "only-two-newlines"), ("\n\n\n", "only-three-newlines"),
        ("\na", "leading-newline"), ("\na\n", "leading-newline-and-trailing"), ("\n\na\n", "two-leading-newlines"),
        (" a\nb", "leading-space-first-line"), (" a\nb\n", "leading-space-first-line-nl"),
        ("  a\n  b\n", "all-lines-indented-2"), ("    a\n", "indented-4-single"),
        ("\ta\nb\n", "leading-tab-first-line"), ("a\n\tb\n", "leading-tab-second-line"), ("a\tb\nc\n", "inner-tab"),
        ("a \nb\n", "trailing-space-line"), ("a\nb \n", "trailing-space-last-line"), ("a\nb ", "trailing-space-no-nl"),
        ("a\t\nb\n", "trailing-tab-line"), ("a\n\nb", "empty-line-middle"), ("a\n\nb\n", "empty-line-middle-nl"),
        ("a\n \nb\n", "space-only-line-middle"), ("a\n\n\n\nb\n", "three-empty-lines-middle"),
        ("a\r\nb\r\n", "crlf"), ("a\r\nb", "crlf-no-trailing"), ("a\rb", "lone-cr"), ("\r", "only-cr"),
        ("\r\n", "only-crlf"), ("a\r", "trailing-cr"), ("a\n\rb", "lf-cr"),
        ("a\n b\n", "second-line-indented"), ("a\n  b\n    c\n", "staircase"), ("# x\ny\n", "comment-like-first-line"),
        ("- a\n- b\n", "yaml-list"), ("key: value\nother: 1\n", "yaml-map"), ("---\na\n", "doc-start-first-line"),
        ("a\n---\nb\n", "doc-start-middle"), ("a\n...\n", "doc-end-middle"), ("'a'\nb\n", "quote-first-line"),
        ('"a"\nb\n', "dquote-first-line"), ("|\na\n", "pipe-first-line"), ("a\n\u00e9\n", "unicode-line"),
        ("a\n😀\n", "emoji-line"), ("a\u0085b\n", "nel-and-newline"), ("a\u2028b\n", "ls-and-newline"),
        ("a\n\x01\n", "control-char-line"), ("true\n", "true-newline"), ("1\n", "one-newline"),
        ("a\n ", "trailing-space-after-newline"), ("a\n\t", "trailing-tab-after-newline"),
        (" \n", "space-newline"), ("  \n  \n", "space-lines-only"), ("\n a", "newline-space-a"),
        ("a\n\n ", "newline-newline-space"), ("x\n" * 50, "fifty-lines"),
        ("#!/bin/sh\necho hi\n", "shebang"), ("a: |\n  b\n", "nested-block-scalar"),
        ("{\n  \"a\": 1\n}\n", "json-pretty"), ("\ufeffa\nb\n", "bom-first-line"),
    ]
    for w, lab in ml:
        s(w, lab, group="multiline")
    return out


def embeddings() -> None:
    for label, value in quoting_strings():
        q = ydq(value)
        docs = {
            "eka": "{\"customization\": {\"extraKernelArgs\": [" + q + "]}}",
            "meta": "{\"customization\": {\"meta\": [{\"key\": 1, \"value\": " + q + "}]}}",
            "emc": "{\"customization\": {\"embeddedMachineConfiguration\": " + q + "}}",
            # implicit (simple) keys are limited to 1024 chars by the YAML
            # scanner, so long keys are written as explicit "? key : value".
            "optkey": "{\"overlay\": {\"name\": \"nm\", \"image\": \"img\", \"options\": {"
                      + ("? " + q + " : " if len(q) > 1000 else q + ": ") + "\"v\"}}}",
            "optval": "{\"overlay\": {\"name\": \"nm\", \"image\": \"img\", \"options\": {\"k\": " + q + "}}}",
        }
        for where, doc in docs.items():
            name = add(f"str/{label}/{where}", doc)
            EMBEDDED[name] = (where, value)


# --------------------------------------------------------------------------
# 3. overlay options
# --------------------------------------------------------------------------

def ov(options_yaml: str) -> str:
    """Overlay document with the given (already indented, block) options body."""
    return "overlay:\n  name: rpi_generic\n  image: siderolabs/sbc-raspberrypi\n  options:\n" + options_yaml


def ovf(flow: str) -> str:
    return "overlay: {name: rpi_generic, image: siderolabs/sbc-raspberrypi, options: " + flow + "}\n"


def overlay_options() -> None:
    A = "opt/"
    add(A + "nested-maps", ov("    a:\n      b:\n        c: d\n        e: f\n      g: h\n"))
    add(A + "deeply-nested-10", ovf("{l1: {l2: {l3: {l4: {l5: {l6: {l7: {l8: {l9: {l10: deep}}}}}}}}}}"))
    add(A + "list-of-scalars", ovf("{l: [1, two, 3.5, true, null]}"))
    add(A + "list-of-lists", ovf("{l: [[1, 2], [3, [4, 5]], []]}"))
    add(A + "maps-in-lists-in-lists", ovf("{l: [[{a: 1, b: 2}], [{c: [x, y]}, {d: {e: f}}]]}"))
    add(A + "list-of-maps-multi-keys", ovf("{l: [{name: a, value: 1}, {value: 2, name: b}]}"))
    add(A + "map-in-list-with-list-value", ovf("{l: [{a: [1, 2], b: {c: [3]}}]}"))
    add(A + "list-of-empty-things", ovf("{l: [{}, [], null, '']}"))
    add(A + "empty-map-value", ovf("{m: {}}"))
    add(A + "empty-list-value", ovf("{l: []}"))
    add(A + "empty-options-map", ovf("{}"))
    add(A + "null-options", ovf("null"))
    add(A + "null-values", ov("    a: null\n    b: ~\n    c:\n    d: Null\n    e: NULL\n"))
    add(A + "only-null-value", ovf("{a: null}"))
    add(A + "bools", ovf("{a: true, b: false, c: True, d: FALSE}"))
    add(A + "yaml11-bools-are-strings", ovf("{a: yes, b: no, c: on, d: off, e: y, f: n, g: Yes, h: OFF}"))
    add(A + "ints", ovf("{a: 1, b: -1, c: 0, d: +5, e: 1_000, f: 0x10, g: 0o17, h: 010, i: 0b101, j: -0, k: 007}"))
    add(A + "big-ints", ov("    i64max: 9223372036854775807\n    i64min: -9223372036854775808\n"
                           "    u64big: 9223372036854775808\n    u64max: 18446744073709551615\n"
                           "    over-u64: 18446744073709551616\n    under-i64: -9223372036854775809\n"
                           "    hex-u64max: 0xFFFFFFFFFFFFFFFF\n    hex-over: 0x10000000000000000\n"
                           "    huge: 123456789012345678901234567890\n"))
    add(A + "floats-shortest", ov("    a: 1000000.0\n    b: 0.00001\n    c: 0.1\n    d: 1e6\n    e: 1.5\n"
                                  "    f: 1e300\n    g: 1e-300\n    h: 1.0\n    i: 100.0\n    j: 123456789.0\n"
                                  "    k: 1e20\n    l: 1e21\n    m: 12345678901234567890.0\n    n: -0.0\n"
                                  "    o: 2.5e-7\n    p: 3.14159265358979\n    q: 0.000001\n    r: 0.0001\n"
                                  "    s: 1e-4\n    t: 123456.7\n    u: 1234567.0\n    v: 0.30000000000000004\n"
                                  "    w: 1.7976931348623157e308\n    x: 5e-324\n    y: 1.\n    z: .5\n"))
    add(A + "floats-special", ovf("{a: .inf, b: -.inf, c: .nan, d: +.inf, e: .Inf, f: .NaN, g: 1e999, h: -1e999}"))
    add(A + "float-underscore", ovf("{a: 1_000.5, b: 6.8523015e+5, c: 685.230_15e+03}"))
    add(A + "timestamps-stay-strings", ovf("{a: 2001-12-14, b: 2001-12-14t21:59:43.10-05:00, c: 2001-02-30}"))
    add(A + "timestamps-plain-all-forms",
        ov("".join(f"    t{i:02d}: {t}\n" for i, t in enumerate([
            "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14T21:59:43.10Z", "2001-12-14 21:59:43.10",
            "2001-12-14 21:59:43.10 -5", "2001-12-14T21:59:43Z", "2001-12-14T21:59:43", "2001-12-15 2:59:43.10",
            "2001-02-30", "2001-1-2", "2001-13-01", "2001-12-14T25:00:00Z", "2001-12-14T21:59:43.123456789+05:30",
            "2001-12-14T21:59:43.1234567891Z", "1999-1-1T1:2:3Z", "0001-01-01", "2001-12-14t21:59:43.10",
            "2001-12-14T00:00:00Z", "2001-12-14T21:59:43.000Z", "2001-12-14T21:59:43-00:00",
        ]))))
    add(A + "timestamps-in-list", ovf("{l: [2001-12-14, '2001-12-14', !!str 2001-12-14]}"))
    add(A + "base60-and-merge-string", ovf("{a: 1:20, b: '<<'}"))
    add(A + "quoted-scalars-stay-strings", ovf("{a: '1', b: \"true\", c: 'null', d: '', e: \"1.5\"}"))
    add(A + "keys-needing-quotes",
        ov("    \"1\": a\n    \"true\": b\n    \"null\": c\n    \"\": d\n    \"a: b\": e\n    \"- x\": f\n"
           "    \"~\": g\n    \"yes\": h\n    \"0x10\": i\n    \"#c\": j\n    \" lead\": k\n    \"[x]\": l\n"))
    add(A + "non-string-keys-top", ovf("{1: a, true: b, 1.5: c, 0x10: d}"))
    add(A + "null-key-top", ovf("{null: a}"))
    add(A + "tilde-key-top", ovf("{~: a}"))
    add(A + "seq-key-top", ovf("{[a, b]: c}"))
    add(A + "map-key-top", ovf("{{a: b}: c}"))
    add(A + "non-string-keys-nested", ovf("{m: {1: x, true: y, 2.5: z, 0x10: w, b: v, 10: u, 9: t}}"))
    add(A + "null-key-nested", ovf("{m: {null: x, a: y}}"))
    add(A + "seq-key-nested", ovf("{m: {[a, b]: x}}"))
    add(A + "map-key-nested", ovf("{m: {{a: 1}: x}}"))
    add(A + "bool-and-int-keys-nested-ordering", ovf("{m: {false: a, true: b, -1: c, 0: d, 1: e, 1.5: f, z: g, A: h}}"))
    add(A + "bool-vs-int-equal-value-keys", ovf("{m: {0: a, false: b, 1: c, true: d, 1.0: e, 0.0: f}}"))
    add(A + "float-int-keys-nested", ovf("{m: {1.5: a, 1: b, 2: c, -0.5: d, .inf: e, -.inf: f}}"))
    # NaN keys make go-yaml's comparator inconsistent: expected to be
    # reported as unstable and left out of the corpus.
    add(A + "nan-key-nested", ovf("{m: {.nan: a, 1: b, 2: c, 0: d, x: e}}"))
    add(A + "int-keys-nested-numeric-order", ovf("{m: {10: a, 9: b, 100: c, -5: d, 2: e}}"))
    add(A + "nested-list-keys-int", ovf("{l: [{2: b, 1: a}]}"))
    add(A + "anchors-aliases", ov("    base: &b {x: 1, y: [a, b]}\n    copy: *b\n    scalar: &s hello\n    again: *s\n"))
    add(A + "merge-key", ov("    base: &b {x: 1, y: 2}\n    derived:\n      <<: *b\n      y: 3\n      z: 4\n"))
    add(A + "merge-key-list", ov("    a: &a {x: 1}\n    b: &b {y: 2}\n    c:\n      <<: [*a, *b]\n      z: 3\n"))
    add(A + "merge-key-top-level-options", "base: &b {k: v}\noverlay:\n  name: n\n  image: i\n  options:\n    <<: *b\n")
    add(A + "quoted-merge-key", ovf("{'<<': {a: 1}}"))
    add(A + "binary-valid-utf8", ovf("{b: !!binary aGVsbG8=}"))
    add(A + "binary-invalid-utf8", ovf("{b: !!binary /w==}"))
    add(A + "binary-invalid-base64", ovf("{b: !!binary '***'}"))
    add(A + "explicit-str-tag-int", ovf("{a: !!str 123, b: !!str true}"))
    add(A + "explicit-int-tag-quoted", ovf("{a: !!int \"5\"}"))
    add(A + "explicit-float-tag-int", ovf("{a: !!float 1, b: !!float '2'}"))
    add(A + "explicit-bool-tag", ovf("{a: !!bool 'true'}"))
    add(A + "explicit-null-tag", ovf("{a: !!null ''}"))
    add(A + "explicit-int-tag-bad", ovf("{a: !!int abc}"))
    add(A + "custom-tag", ovf("{a: !foo bar}"))
    add(A + "explicit-map-tag", ovf("!!map {a: 1}"))
    add(A + "explicit-seq-tag-options", ovf("!!seq [a]"))
    add(A + "timestamp-tag", ovf("{a: !!timestamp 2001-12-14}"))
    add(A + "duplicate-key", ovf("{a: 1, a: 2}"))
    add(A + "duplicate-key-nested", ovf("{m: {a: 1, a: 2}}"))
    add(A + "options-is-list", ovf("[a, b]"))
    add(A + "options-is-scalar", ovf("x"))
    add(A + "multiline-string-in-list", ovf("{l: [\"a\\nb\\n\", \"c\"]}"))
    add(A + "multiline-string-nested-map", ovf("{m: {s: \"line1\\nline2\\n\"}}"))
    add(A + "multiline-string-in-nested-list", ovf("{l: [[\"a\\nb\"]]}"))
    add(A + "long-list", ovf("{l: [" + ", ".join(str(i) for i in range(100)) + "]}"))
    add(A + "list-item-map-then-list", ovf("{l: [{a: 1}, [2, 3], 4]}"))
    add(A + "empty-string-key-nested-map", ovf("{'': {a: 1}}"))
    add(A + "empty-string-key-list", ovf("{'': [1]}"))
    add(A + "literal-block-in-input", ov("    script: |\n      echo one\n      echo two\n    folded: >\n      a\n      b\n"))
    add(A + "mixed-all-types", ovf("{s: str, i: 1, f: 1.5, b: true, n: null, l: [1], m: {k: v}, e: {}, el: []}"))
    add(A + "realistic-rpi", ov("    configTxt: |\n      gpu_mem=128\n      dtoverlay=vc4-kms-v3d\n"
                               "    configTxtAppend: \"\"\n    enableUart: true\n"))
    add(A + "realistic-jetson", ovf("{kernelArgs: [console=ttyS0, 'net.ifnames=0'], bootloader: {timeout: 5}}"))

    # key ordering (go-yaml natural sort); each list is one map in the given order
    orderings = {
        "a2-a10": ["a10", "a2", "a1", "a20", "a3"],
        "digits-vs-letters": ["b", "1", "a", "10", "2", "_x", "A", "B"],
        "reference-3.6-set": ["b", "ab", "a10", "a2", "a_b", "a-b", "a", "B", "A", "10", "2", "1", "_x"],
        "upper-lower": ["b", "B", "a", "A", "aB", "Ab", "ab", "AB", "Z", "z"],
        "unicode-letters": ["é", "e", "z", "É", "ä", "a", "日本", "Ω", "ω", "😀", "ß"],
        "mixed-lengths": ["aaa", "a", "aa", "b", "ba", "abc", "ab", "aaaa"],
        "leading-zeros": ["a01", "a1", "a001", "a0", "a00", "a10", "a010", "a2", "a02"],
        "pure-numbers": ["10", "9", "100", "010", "0", "00", "1", "01", "-1", "1.5", "1e3"],
        "digit-runs-middle": ["x1y2", "x1y10", "x10y1", "x2y1", "x1y1"],
        "punctuation": ["-", "_", ".", "~", "a-", "a_", "a.", "a~", "a", "!", "#", "$", "/", ":"],
        "letters-after-digits": ["1a", "1b", "1", "a1", "1A", "10a", "2a"],
        "digits-then-letters-mixed": ["v1.2", "v1.10", "v1.9", "v10.1", "v2.0", "v1.1a", "v1.1"],
        "case-insensitive-looking": ["Apple", "apple", "Banana", "banana", "APPLE", "aPPLE"],
        "spaces": ["a b", "a", "ab", " a", "a  b", "a\tb"],
        "empty-and-space": ["", " ", "a", "0"],
        "big-digit-runs": ["a99999999999999999999", "a100000000000000000000", "a9", "a18446744073709551616"],
        "unicode-digits": ["a٣", "a3", "a²", "a10", "a½"],
        "long-common-prefix": ["prefix_" + x for x in ["b", "a", "10", "9", "B", "_"]],
        "raspberrypi-like": ["configTxtAppend", "configTxt", "enableUart", "dtoverlay", "kernelArgs", "Boot"],
    }
    for nm, keys in orderings.items():
        add(f"opt/order/{nm}", j({"overlay": {"name": "nm", "image": "img", "options": {k: i for i, k in enumerate(keys)}}}))
    add("opt/order/nested-map-sorted", ovf("{z: {b: 1, a: 2, a10: 3, a9: 4}, a: [{z: 1, y: 2}]}"))

    # long / multi-line keys (simple-key limit is 128 chars in libyaml)
    for n in (127, 128, 129, 130, 200, 1000):
        add(f"opt/long-key-{n}", j({"overlay": {"name": "nm", "image": "img", "options": {"k" * n: "v"}}}))
    add("opt/long-key-128-with-spaces", j({"overlay": {"name": "nm", "image": "img",
                                                       "options": {("ab " * 43).strip(): "v"}}}))
    add("opt/long-key-131-with-spaces", j({"overlay": {"name": "nm", "image": "img",
                                                       "options": {("ab " * 44).strip(): "v"}}}))
    add("opt/long-key-129-nested-map-value",
        j({"overlay": {"name": "nm", "image": "img", "options": {"k" * 129: {"a": 1, "b": [1, 2]}}}}))
    add("opt/long-key-129-list-value",
        j({"overlay": {"name": "nm", "image": "img", "options": {"k" * 129: [1, {"x": "y"}]}}}))
    add("opt/long-key-129-empty-map-value", j({"overlay": {"name": "nm", "image": "img", "options": {"k" * 129: {}}}}))
    add("opt/long-key-129-multiline-value",
        j({"overlay": {"name": "nm", "image": "img", "options": {"k" * 129: "a\nb\n"}}}))
    add("opt/long-key-nested", j({"overlay": {"name": "nm", "image": "img", "options": {"m": {"q" * 150: 1}}}}))
    add("opt/long-key-in-list-item", j({"overlay": {"name": "nm", "image": "img", "options": {"l": [{"q" * 150: 1, "a": 2}]}}}))
    add("opt/long-key-unicode-129-chars", j({"overlay": {"name": "nm", "image": "img", "options": {"é" * 129: 1}}}))
    add("opt/long-key-unicode-65-chars-130-bytes", j({"overlay": {"name": "nm", "image": "img", "options": {"é" * 65: 1}}}))
    add("opt/long-key-emoji-33", j({"overlay": {"name": "nm", "image": "img", "options": {"😀" * 33: 1}}}))
    add("opt/long-key-double-quoted-129", j({"overlay": {"name": "nm", "image": "img", "options": {"\t" + "k" * 128: 1}}}))
    add("opt/long-key-single-quoted-129", j({"overlay": {"name": "nm", "image": "img", "options": {"#" + "k" * 128: 1}}}))
    add("opt/long-key-single-quoted-127", j({"overlay": {"name": "nm", "image": "img", "options": {"#" + "k" * 126: 1}}}))
    add("opt/multiline-key", j({"overlay": {"name": "nm", "image": "img", "options": {"a\nb": 1}}}))
    add("opt/multiline-key-trailing-newline", j({"overlay": {"name": "nm", "image": "img", "options": {"a\nb\n": 1}}}))
    add("opt/multiline-key-map-value", j({"overlay": {"name": "nm", "image": "img", "options": {"a\nb": {"c": 1}}}}))
    add("opt/multiline-key-nested", j({"overlay": {"name": "nm", "image": "img", "options": {"m": {"x\ny": [1]}}}}))


# --------------------------------------------------------------------------
# 4. typed fields: meta keys, bools, bootloader, sectorSize
# --------------------------------------------------------------------------

IMPL_DEFINED_MARK = " [impl-defined: Go float->uint conversion out of range, linux/amd64 result]"


def impl_defined(flag: bool) -> str:
    """Name suffix for cases whose result depends on the CPU architecture.

    go-yaml decodes a float into an unsigned field with uint64(f) after only
    checking f <= MaxUint64; for negative values below -1 or values that
    round to 2^64 the Go spec leaves the conversion result
    implementation-defined (amd64 and arm64 differ).
    """
    return IMPL_DEFINED_MARK if flag else ""


def typed_fields() -> None:
    for k in ["0", "1", "10", "0xa", "0xA", "0XA", "0x0a", "010", "0o12", "0O12", "0b11", "0B11", "1_0", "255",
              "0xff", "0377", "0o377", "0b11111111", "256", "0x100", "0400", "-1", "-0", "+10", "00", "0777",
              "10.0", "10.9", "255.9", "256.0", "1e2", "-1.5", "-0.5", ".5", ".inf", ".nan", "1e999",
              "\"10\"", "'10'", "!!int \"10\"", "!!int 10", "!!str 10", "null", "~", "true", "yes", "x", "[]",
              "{}", "9223372036854775808", "18446744073709551616", "1:20", "2001-12-14", "08", "1__0"]:
        add(f"meta-key/{k}{impl_defined(k in ('-1.5',))}",
            "customization:\n  meta:\n    - key: " + k + "\n      value: v\n")
    add("meta-key/missing", "customization:\n  meta:\n    - value: v\n")
    add("meta-key/empty", "customization:\n  meta:\n    - key:\n      value: v\n")
    for v in ["123", "true", "yes", "null", "~", "1.50", "0x10", "", "''", "[a]", "{a: b}", "!!binary aGVsbG8=",
              "!!binary /w==", "!!int 0x10", "!!str 1", ".inf", "2001-12-14", "|\n        a\n        b",
              ">\n        a\n        b", "|-\n        a", "|+\n        a\n\n", "|2\n          a\n", "\"a\\u00e9\\U0001F600\"",
              "'it''s'", "a\n        b", "&x foo", "!foo bar"]:
        add("meta-value/" + (json.dumps(v)[1:-1] or "<empty>"),
            "customization:\n  meta:\n    - key: 1\n      value: " + v + "\n")
    add("meta-value/missing", "customization:\n  meta:\n    - key: 1\n")
    add("meta/multiple-ordered", "customization:\n  meta: [{key: 2, value: b}, {key: 1, value: a}, {key: 2, value: c}]\n")
    add("meta/unknown-field", "customization:\n  meta:\n    - key: 1\n      value: v\n      extra: x\n")
    add("meta/empty-item", "customization:\n  meta: [{}]\n")
    add("meta/null-item", "customization:\n  meta: [null]\n")
    add("meta/null-item-between", "customization:\n  meta: [{key: 1, value: a}, null, {key: 2, value: b}]\n")
    add("meta/empty-list", "customization:\n  meta: []\n")
    add("meta/null", "customization:\n  meta: null\n")
    add("meta/key-value-swapped-order", "customization:\n  meta:\n    - value: v\n      key: 3\n")
    add("meta/scalar-item", "customization:\n  meta: [1]\n")
    add("meta/map-not-list", "customization:\n  meta: {key: 1, value: v}\n")
    add("meta/scalar", "customization:\n  meta: x\n")

    for v in ["true", "True", "TRUE", "false", "yes", "Yes", "YES", "y", "Y", "on", "On", "ON", "no", "off", "n",
              "NO", "1", "0", "\"true\"", "'yes'", "null", "~", "!!bool true", "!!bool yes", "!!str true", "tRUE",
              "[true]", "{}", "1.0", ""]:
        add("secureboot-iwkc/" + (v or "<empty>"),
            "customization:\n  secureboot:\n    includeWellKnownCertificates: " + v + "\n")
    for v in ["off", "manual", "if-safe", "force", "Off", "OFF", "no", "true", "1", "''", "null", "[x]", "' force'"]:
        add("secureboot-enrollKeys/" + v, "customization:\n  secureboot:\n    enrollKeys: " + v + "\n")
    add("secureboot/empty", "customization:\n  secureboot: {}\n")
    add("secureboot/both-zero", "customization:\n  secureboot: {enrollKeys: '', includeWellKnownCertificates: false}\n")
    add("secureboot/unknown-field", "customization:\n  secureboot: {enroll: force}\n")
    add("secureboot/scalar", "customization:\n  secureboot: true\n")

    for v in ["none", "None", "NONE", "nOnE", "dual-boot", "Dual-Boot", "DUAL-BOOT", "dual-Boot", "sd-boot",
              "SD-Boot", "Sd-Boot", "SD-BOOT", "sd-BOOT", "grub", "Grub", "GRUB", "gRuB", "auto", "Auto", "AUTO",
              "\"\"", "''", "null", "~", "dual_boot", "sdboot", "sd boot", "systemd-boot", "0", "1", "2", "3",
              "\"sd-boot\"", "'grub'", "!!str grub", "!!int 2", "' sd-boot'", "'sd-boot '", "[sd-boot]",
              "{a: b}", "true", "!!binary Z3J1Yg==", "GRUB\u0130", "\u0131none"]:
        add("bootloader/" + v, "customization:\n  bootloader: " + v + "\n")
    add("bootloader/missing-value", "customization:\n  bootloader:\n")
    add("bootloader/with-other-fields", "customization: {bootloader: grub, extraKernelArgs: [a], secureboot: {includeWellKnownCertificates: true}}")

    for v in ["4096", "512", "0x1000", "0X1000", "0o10000", "010000", "0b1000000000000", "4_096", "0", "-1",
              "4096.0", "4096.5", "4e3", "1e3", "-1.5", "-0.5", ".inf", "\"4096\"", "'512'", "!!int 4096", "null", "~",
              "18446744073709551615", "18446744073709551616", "0xFFFFFFFFFFFFFFFF", "9223372036854775808",
              "-9223372036854775808", "abc", "[4096]", "true", "1e19", "1e20"]:
        add(f"diskImage-sectorSize/{v}{impl_defined(v in ('-1.5', '18446744073709551616'))}",
            "customization:\n  diskImage:\n    sectorSize: " + v + "\n")
    add("diskImage/empty", "customization:\n  diskImage: {}\n")
    add("diskImage/unknown-field", "customization:\n  diskImage: {size: 1}\n")
    add("diskImage/scalar", "customization:\n  diskImage: 4096\n")


# --------------------------------------------------------------------------
# 5. decoding edge cases
# --------------------------------------------------------------------------

def decoding() -> None:
    D = "decode/"
    # documents / streams
    add(D + "empty-input", "")
    add(D + "only-newline", "\n")
    add(D + "only-spaces", "   \n  ")
    add(D + "comments-only", "# just a comment\n# another\n")
    add(D + "doc-start-only", "---\n")
    add(D + "doc-start-end-only", "---\n...\n")
    add(D + "doc-end-only", "...\n")
    add(D + "null-document", "null\n")
    add(D + "tilde-document", "~\n")
    add(D + "empty-doc-then-doc", "---\n---\ncustomization: {extraKernelArgs: [a]}\n")
    add(D + "multiple-documents-first-wins", "customization: {extraKernelArgs: [a]}\n---\ncustomization: {extraKernelArgs: [b]}\n")
    add(D + "multiple-documents-second-unknown-field", "customization: {}\n---\nfoo: bar\n")
    add(D + "multiple-documents-second-syntax-error", "customization: {}\n---\n[unclosed\n")
    add(D + "multiple-documents-second-bad-indent", "customization: {}\n---\na:\n  b: 1\n c: 2\n")
    add(D + "explicit-start-end", "---\ncustomization: {extraKernelArgs: [a]}\n...\n")
    add(D + "explicit-start-trailing-garbage-after-end", "---\ncustomization: {}\n...\ngarbage: [\n")
    add(D + "yaml-directive-1.1", "%YAML 1.1\n---\ncustomization: {extraKernelArgs: [a]}\n")
    add(D + "yaml-directive-1.2", "%YAML 1.2\n---\ncustomization: {extraKernelArgs: [a]}\n")
    add(D + "yaml-directive-2.0", "%YAML 2.0\n---\ncustomization: {}\n")
    add(D + "tag-directive", "%TAG !e! tag:example.com,2000:\n---\ncustomization: {extraKernelArgs: [!e!foo a]}\n")
    add(D + "directive-without-doc-start", "%YAML 1.2\ncustomization: {}\n")
    add(D + "root-is-list", "[a, b]\n")
    add(D + "root-is-scalar", "hello\n")
    add(D + "root-is-int", "1\n")
    add(D + "root-is-empty-string", "''\n")
    add(D + "root-tagged-map", "!!map {customization: {}}\n")
    add(D + "root-custom-tag", "!schematic {customization: {}}\n")
    add(D + "root-str-tag-on-map", "!!str {customization: {}}\n")
    add(D + "root-anchor", "&root {customization: {extraKernelArgs: [a]}}\n")

    # null / empty sections
    add(D + "customization-null", "customization: null\n")
    add(D + "customization-tilde", "customization: ~\n")
    add(D + "customization-empty-value", "customization:\n")
    add(D + "customization-empty-string", "customization: ''\n")
    add(D + "overlay-empty-map", "overlay: {}\n")
    add(D + "overlay-null", "overlay: null\n")
    add(D + "overlay-only-name", "overlay: {name: rpi_generic}\n")
    add(D + "overlay-only-image", "overlay: {image: siderolabs/sbc-raspberrypi}\n")
    add(D + "overlay-only-options", "overlay: {options: {a: 1}}\n")
    add(D + "overlay-empty-strings", "overlay: {name: '', image: ''}\n")
    add(D + "overlay-options-empty-map", "overlay: {name: a, image: b, options: {}}\n")
    add(D + "systemExtensions-null", "customization: {systemExtensions: null}\n")
    add(D + "officialExtensions-null", "customization: {systemExtensions: {officialExtensions: null}}\n")
    add(D + "officialExtensions-empty", "customization: {systemExtensions: {officialExtensions: []}}\n")
    add(D + "extraKernelArgs-null", "customization: {extraKernelArgs: null}\n")
    add(D + "extraKernelArgs-empty-value", "customization:\n  extraKernelArgs:\n")
    add(D + "emc-empty-string", "customization: {embeddedMachineConfiguration: ''}\n")
    add(D + "emc-null", "customization: {embeddedMachineConfiguration: null}\n")
    add(D + "owner-alice", "owner: alice\n")
    add(D + "owner-alice-with-customization", "owner: alice\ncustomization:\n  extraKernelArgs: [a]\n")
    add(D + "owner-after-customization", "customization: {extraKernelArgs: [a]}\noverlay: {name: n, image: i}\nowner: bob\n")
    add(D + "owner-empty", "owner: ''\n")
    add(D + "owner-number", "owner: 123\n")
    add(D + "owner-email", "owner: alice@example.com\n")
    add(D + "owner-list", "owner: [alice]\n")

    # null elements in string lists
    add(D + "eka-null-element-middle", "customization: {extraKernelArgs: [a, null, b]}\n")
    add(D + "eka-only-null", "customization: {extraKernelArgs: [null]}\n")
    add(D + "eka-tilde-element", "customization: {extraKernelArgs: [~, a]}\n")
    add(D + "eka-block-empty-item", "customization:\n  extraKernelArgs:\n    - a\n    -\n    - b\n")
    add(D + "eka-quoted-null", "customization: {extraKernelArgs: ['null', \"~\"]}\n")
    add(D + "ext-null-element", "customization: {systemExtensions: {officialExtensions: [siderolabs/gvisor, null]}}\n")
    add(D + "eka-explicit-null-tag", "customization: {extraKernelArgs: [!!null '', a]}\n")
    add(D + "eka-flow-trailing-comma", "customization: {extraKernelArgs: [a, b,]}\n")
    add(D + "eka-flow-double-comma", "customization: {extraKernelArgs: [a, , b]}\n")
    add(D + "eka-scalars-kept-as-source-text",
        "customization: {extraKernelArgs: [true, 1.50, 0x10, 010, 1e3, .inf, ~x, 2001-12-14, 1_000, +1]}\n")
    add(D + "eka-plain-multiline-folded", "customization:\n  extraKernelArgs:\n    - a\n      b\n    - c\n")
    add(D + "eka-folded-block", "customization:\n  extraKernelArgs:\n    - >\n      a\n      b\n")
    add(D + "eka-literal-block", "customization:\n  extraKernelArgs:\n    - |\n      a\n      b\n")
    add(D + "eka-single-quoted-escapes", "customization: {extraKernelArgs: ['a''b', 'c\\nd']}\n")
    add(D + "eka-double-quoted-escapes",
        "customization: {extraKernelArgs: [\"\\t\\x41\\u00e9\\U0001F600\\N\\_\\L\\P\\0\\a\\e\\ \\v\"]}\n")
    add(D + "eka-double-quoted-line-folding", "customization:\n  extraKernelArgs:\n    - \"a\n      b\n\n      c\"\n")
    add(D + "eka-double-quoted-escaped-newline", "customization:\n  extraKernelArgs:\n    - \"a\\\n      b\"\n")
    add(D + "eka-single-quoted-multiline", "customization:\n  extraKernelArgs:\n    - 'a\n      b'\n")
    add(D + "eka-invalid-escape", "customization: {extraKernelArgs: [\"\\q\"]}\n")

    # anchors, aliases, merge keys
    add(D + "anchor-alias-list", "customization:\n  extraKernelArgs: &args [a, b]\n  systemExtensions:\n    officialExtensions: *args\n")
    add(D + "anchor-alias-scalar", "customization:\n  extraKernelArgs: [&x foo, *x, *x]\n")
    add(D + "anchor-alias-meta-value", "customization:\n  extraKernelArgs: [&v hello]\n  meta: [{key: 1, value: *v}]\n")
    add(D + "anchor-alias-map", "overlay: &o {name: n, image: i}\ncustomization: {}\n")
    add(D + "alias-undefined", "customization: {extraKernelArgs: [*nope]}\n")
    add(D + "alias-of-map-into-customization", "x: &c {extraKernelArgs: [a]}\ncustomization: *c\n")
    add(D + "anchor-alias-customization-defined-inside",
        "customization: &c\n  extraKernelArgs: [a]\n")
    add(D + "merge-key-customization", "customization:\n  <<: {extraKernelArgs: [a]}\n")
    add(D + "merge-key-with-override", "customization:\n  <<: {extraKernelArgs: [a], bootloader: grub}\n  extraKernelArgs: [b]\n")
    add(D + "merge-key-alias", "customization:\n  extraKernelArgs: [x]\n  secureboot:\n    <<: &sb {includeWellKnownCertificates: true}\n")
    add(D + "merge-key-list-of-maps", "customization:\n  <<: [{extraKernelArgs: [a]}, {bootloader: grub}]\n")
    add(D + "merge-key-top-level", "<<: {customization: {extraKernelArgs: [a]}}\n")
    add(D + "merge-key-unknown-field", "customization:\n  <<: {foo: 1}\n")
    add(D + "merge-key-scalar", "customization:\n  <<: x\n")
    add(D + "merge-key-quoted", "customization:\n  '<<': {extraKernelArgs: [a]}\n")
    add(D + "merge-key-after-explicit", "customization:\n  extraKernelArgs: [b]\n  <<: {extraKernelArgs: [a]}\n")

    # explicit tags
    add(D + "tag-str-on-int-in-eka", "customization: {extraKernelArgs: [!!str 123]}\n")
    add(D + "tag-int-on-quoted-meta-key", "customization: {meta: [{key: !!int \"5\", value: v}]}\n")
    add(D + "tag-int-on-string-field", "customization: {extraKernelArgs: [!!int \"5\"]}\n")
    add(D + "tag-int-bad-value-string-field", "customization: {extraKernelArgs: [!!int abc]}\n")
    add(D + "tag-bool-on-string-field", "customization: {extraKernelArgs: [!!bool yes]}\n")
    add(D + "tag-float-on-string-field", "customization: {extraKernelArgs: [!!float 1]}\n")
    add(D + "tag-null-on-string-field", "customization: {extraKernelArgs: [!!null x]}\n")
    add(D + "tag-binary-on-string-field", "customization: {extraKernelArgs: [!!binary aGVsbG8=]}\n")
    add(D + "tag-binary-invalid-utf8-string-field", "customization: {extraKernelArgs: [!!binary /w==]}\n")
    add(D + "tag-custom-on-string-field", "customization: {extraKernelArgs: [!custom x]}\n")
    add(D + "tag-verbatim-str", "customization: {extraKernelArgs: [!<tag:yaml.org,2002:str> 1]}\n")
    add(D + "tag-nonspecific", "customization: {extraKernelArgs: [! 1]}\n")
    add(D + "tag-seq-on-map", "customization: !!seq {extraKernelArgs: [a]}\n")
    add(D + "tag-map-on-customization", "customization: !!map {extraKernelArgs: [a]}\n")
    add(D + "tag-str-on-bool-field", "customization: {secureboot: {includeWellKnownCertificates: !!str true}}\n")
    add(D + "tag-str-on-uint-field", "customization: {diskImage: {sectorSize: !!str 4096}}\n")
    add(D + "tag-timestamp-on-string-field", "customization: {extraKernelArgs: [!!timestamp 2001-12-14]}\n")

    # duplicate keys
    add(D + "duplicate-top-level", "customization: {}\ncustomization: {}\n")
    add(D + "duplicate-customization-field", "customization: {extraKernelArgs: [a], extraKernelArgs: [b]}\n")
    add(D + "duplicate-overlay-field", "overlay: {name: a, name: b, image: i}\n")
    add(D + "duplicate-meta-item-field", "customization: {meta: [{key: 1, key: 2, value: v}]}\n")
    add(D + "duplicate-quoted-vs-plain", "customization: {}\n\"customization\": {}\n")

    # unknown fields at each level / wrong spelling
    add(D + "unknown-top-level", "foo: bar\n")
    add(D + "unknown-top-level-with-valid", "customization: {}\nfoo: bar\n")
    add(D + "unknown-customization", "customization: {foo: bar}\n")
    add(D + "unknown-overlay", "overlay: {name: n, image: i, foo: bar}\n")
    add(D + "unknown-systemExtensions", "customization: {systemExtensions: {extensions: [a]}}\n")
    add(D + "unknown-secureboot", "customization: {secureboot: {foo: true}}\n")
    add(D + "unknown-diskImage", "customization: {diskImage: {foo: 1}}\n")
    add(D + "unknown-meta-item", "customization: {meta: [{key: 1, value: v, foo: x}]}\n")
    add(D + "unknown-multiple", "foo: 1\nbar: 2\ncustomization: {baz: 3}\n")
    add(D + "wrong-case-Customization", "Customization: {}\n")
    add(D + "wrong-case-extrakernelargs", "customization: {extrakernelargs: [a]}\n")
    add(D + "snake-case-extra_kernel_args", "customization: {extra_kernel_args: [a]}\n")
    add(D + "wrong-case-secureBoot", "customization: {secureBoot: {}}\n")
    add(D + "wrong-case-SystemExtensions", "customization: {SystemExtensions: {}}\n")
    add(D + "key-with-trailing-space", "customization: {'extraKernelArgs ': [a]}\n")
    add(D + "unknown-field-is-null", "customization: {foo: null}\n")
    add(D + "int-key-top-level", "1: x\n")
    add(D + "null-key-top-level", "~: x\n")
    add(D + "bool-key-top-level", "true: x\n")
    add(D + "seq-key-top-level", "[a]: x\n")
    add(D + "complex-key-syntax", "? customization\n: {extraKernelArgs: [a]}\n")
    add(D + "quoted-keys", "\"customization\": {'extraKernelArgs': [a]}\n")

    # type mismatches
    tm = {
        "customization-list": "customization: []\n",
        "customization-scalar": "customization: x\n",
        "customization-int": "customization: 1\n",
        "overlay-scalar": "overlay: x\n",
        "overlay-list": "overlay: [a]\n",
        "overlay-name-list": "overlay: {name: [a], image: i}\n",
        "overlay-name-map": "overlay: {name: {a: b}, image: i}\n",
        "overlay-image-int": "overlay: {name: n, image: 1}\n",
        "overlay-options-list": "overlay: {name: n, image: i, options: [a]}\n",
        "overlay-options-scalar": "overlay: {name: n, image: i, options: x}\n",
        "eka-scalar": "customization: {extraKernelArgs: x}\n",
        "eka-map": "customization: {extraKernelArgs: {a: b}}\n",
        "eka-nested-list": "customization: {extraKernelArgs: [[a]]}\n",
        "eka-map-element": "customization: {extraKernelArgs: [{a: b}]}\n",
        "eka-mixed-good-and-bad": "customization: {extraKernelArgs: [a, [b], c, {d: e}]}\n",
        "emc-map": "customization: {embeddedMachineConfiguration: {a: b}}\n",
        "emc-list": "customization: {embeddedMachineConfiguration: [a]}\n",
        "meta-map": "customization: {meta: {a: b}}\n",
        "meta-value-list": "customization: {meta: [{key: 1, value: [a]}]}\n",
        "systemExtensions-list": "customization: {systemExtensions: [a]}\n",
        "systemExtensions-scalar": "customization: {systemExtensions: siderolabs/gvisor}\n",
        "officialExtensions-scalar": "customization: {systemExtensions: {officialExtensions: siderolabs/gvisor}}\n",
        "officialExtensions-map": "customization: {systemExtensions: {officialExtensions: {a: b}}}\n",
        "secureboot-scalar": "customization: {secureboot: true}\n",
        "secureboot-list": "customization: {secureboot: [true]}\n",
        "iwkc-string": "customization: {secureboot: {includeWellKnownCertificates: sure}}\n",
        "enrollKeys-map": "customization: {secureboot: {enrollKeys: {a: b}}}\n",
        "diskImage-scalar": "customization: {diskImage: 4096}\n",
        "sectorSize-string": "customization: {diskImage: {sectorSize: big}}\n",
        "bootloader-map": "customization: {bootloader: {a: b}}\n",
        "multiple-errors": "customization: {extraKernelArgs: x, meta: y, diskImage: {sectorSize: z}}\n",
        "multiple-errors-and-unknown": "customization: {extraKernelArgs: x, foo: 1}\nbar: 2\n",
        "owner-map": "owner: {a: b}\n",
    }
    for nm, doc in tm.items():
        add(D + "type-mismatch/" + nm, doc)

    # flow vs block style equivalence
    full_block = ("overlay:\n  name: rpi_generic\n  image: siderolabs/sbc-raspberrypi\n  options:\n    b: 1\n    a: [x]\n"
                  "customization:\n  extraKernelArgs:\n    - console=tty0\n    - quiet\n  meta:\n    - key: 10\n"
                  "      value: foo\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/gvisor\n"
                  "  bootloader: sd-boot\n  secureboot:\n    includeWellKnownCertificates: true\n"
                  "  diskImage:\n    sectorSize: 4096\n")
    add(D + "style/block-2-space", full_block)
    add(D + "style/block-4-space",
        "overlay:\n    name: rpi_generic\n    image: siderolabs/sbc-raspberrypi\n    options:\n        b: 1\n"
        "        a: [x]\ncustomization:\n    extraKernelArgs:\n        - console=tty0\n        - quiet\n"
        "    meta:\n        - key: 10\n          value: foo\n    systemExtensions:\n        officialExtensions:\n"
        "            - siderolabs/gvisor\n    bootloader: sd-boot\n    secureboot:\n"
        "        includeWellKnownCertificates: true\n    diskImage:\n        sectorSize: 4096\n")
    add(D + "style/block-1-space",
        "overlay:\n name: rpi_generic\n image: siderolabs/sbc-raspberrypi\n options:\n  b: 1\n  a: [x]\n"
        "customization:\n extraKernelArgs:\n  - console=tty0\n  - quiet\n meta:\n  - key: 10\n    value: foo\n"
        " systemExtensions:\n  officialExtensions:\n   - siderolabs/gvisor\n bootloader: sd-boot\n secureboot:\n"
        "  includeWellKnownCertificates: true\n diskImage:\n  sectorSize: 4096\n")
    add(D + "style/block-inconsistent-indent-error", full_block.replace("  ", " "))
    add(D + "style/block-compact-sequences",
        full_block.replace("    - console", "  - console").replace("    - quiet", "  - quiet")
        .replace("    - key: 10\n      value", "  - key: 10\n    value").replace("      - siderolabs/gvisor", "    - siderolabs/gvisor"))
    add(D + "style/flow",
        "{overlay: {name: rpi_generic, image: siderolabs/sbc-raspberrypi, options: {b: 1, a: [x]}}, customization: "
        "{extraKernelArgs: [console=tty0, quiet], meta: [{key: 10, value: foo}], systemExtensions: "
        "{officialExtensions: [siderolabs/gvisor]}, bootloader: sd-boot, secureboot: {includeWellKnownCertificates: true}, "
        "diskImage: {sectorSize: 4096}}}")
    add(D + "style/json-compact", j({"overlay": {"name": "rpi_generic", "image": "siderolabs/sbc-raspberrypi",
                                                 "options": {"b": 1, "a": ["x"]}},
                                     "customization": {"extraKernelArgs": ["console=tty0", "quiet"],
                                                       "meta": [{"key": 10, "value": "foo"}],
                                                       "systemExtensions": {"officialExtensions": ["siderolabs/gvisor"]},
                                                       "bootloader": "sd-boot",
                                                       "secureboot": {"includeWellKnownCertificates": True},
                                                       "diskImage": {"sectorSize": 4096}}}))
    add(D + "style/json-pretty", json.dumps({"customization": {"diskImage": {"sectorSize": 4096},
                                                               "secureboot": {"includeWellKnownCertificates": True},
                                                               "bootloader": "sd-boot",
                                                               "systemExtensions": {"officialExtensions": ["siderolabs/gvisor"]},
                                                               "meta": [{"value": "foo", "key": 10}],
                                                               "extraKernelArgs": ["console=tty0", "quiet"]},
                                             "overlay": {"options": {"a": ["x"], "b": 1}, "image": "siderolabs/sbc-raspberrypi",
                                                         "name": "rpi_generic"}}, indent=2))
    add(D + "style/json-tab-indented", json.dumps({"customization": {"extraKernelArgs": ["a"]}}, indent="\t"))
    add(D + "style/mixed", "customization:\n  extraKernelArgs: [console=tty0, quiet]\n  meta:\n    - {key: 10, value: foo}\n")
    add(D + "style/comments-everywhere",
        "# header\ncustomization: # c1\n  # c2\n  extraKernelArgs: # c3\n    - a # c4\n    # c5\n    - b#notacomment\n# trailer\n")
    add(D + "style/crlf-line-endings", "customization:\r\n  extraKernelArgs:\r\n    - a\r\n    - b\r\n")
    add(D + "style/cr-line-endings", "customization:\r  extraKernelArgs:\r    - a\r")
    add(D + "style/crlf-literal-block", "customization:\r\n  meta:\r\n    - key: 1\r\n      value: |\r\n        a\r\n        b\r\n")
    add(D + "style/no-trailing-newline", "customization:\n  extraKernelArgs: [a]")
    add(D + "style/trailing-whitespace-lines", "customization:   \n  extraKernelArgs: [a]   \n   \n")
    add(D + "style/bom-at-start", "\ufeffcustomization:\n  extraKernelArgs: [a]\n")
    add(D + "style/bom-at-start-json", "\ufeff" + j({"customization": {"extraKernelArgs": ["a"]}}))
    add(D + "style/bom-in-middle", "customization:\n  extraKernelArgs: [a\ufeffb]\n")
    add(D + "style/order-independent-keys", "customization:\n  diskImage: {sectorSize: 4096}\n  extraKernelArgs: [a]\n"
        "overlay: {image: i, name: n}\n")

    EQUIVALENT.append([D + "style/" + n for n in ("block-2-space", "block-4-space", "block-1-space",
                                                   "block-compact-sequences", "flow", "json-compact", "json-pretty")])
    EQUIVALENT.append([D + "style/" + n for n in ("json-tab-indented", "no-trailing-newline",
                                                   "trailing-whitespace-lines", "bom-at-start", "bom-at-start-json")]
                      + [D + "tabs/after-colon", D + "explicit-start-end", D + "yaml-directive-1.1",
                         D + "multiple-documents-first-wins", D + "quoted-keys", D + "complex-key-syntax",
                         D + "merge-key-customization"])

    # JSON specifics
    add(D + "json/unicode-escape-bmp", '{"customization":{"extraKernelArgs":["\\u00fc\\u0041\\u65e5"]}}')
    add(D + "json/unicode-escape-surrogate-pair", '{"customization":{"extraKernelArgs":["\\ud83d\\ude00"]}}')
    add(D + "json/unicode-escape-lone-surrogate", '{"customization":{"extraKernelArgs":["\\ud800"]}}')
    add(D + "json/unicode-escape-control", '{"customization":{"extraKernelArgs":["a\\u0000b\\u001f"]}}')
    add(D + "json/escaped-slash", '{"customization":{"extraKernelArgs":["a\\/b"]}}')
    add(D + "json/escapes-bfnrt", '{"customization":{"extraKernelArgs":["\\b\\f\\n\\r\\t"]}}')
    add(D + "json/escaped-quote-backslash", '{"customization":{"extraKernelArgs":["\\"\\\\"]}}')
    add(D + "json/ensure-ascii-unicode", json.dumps({"customization": {"extraKernelArgs": ["ünï", "日本"]}}))
    add(D + "json/number-key-meta-float", '{"customization":{"meta":[{"key":10.0,"value":"x"}]}}')
    add(D + "json/number-key-meta-exp", '{"customization":{"meta":[{"key":1e1,"value":"x"}]}}')
    add(D + "json/string-key-meta", '{"customization":{"meta":[{"key":"10","value":"x"}]}}')
    add(D + "json/number-meta-value", '{"customization":{"meta":[{"key":1,"value":10}]}}')
    add(D + "json/bool-as-string-iwkc", '{"customization":{"secureboot":{"includeWellKnownCertificates":"true"}}}')
    add(D + "json/null-values", '{"overlay":null,"customization":{"extraKernelArgs":null,"meta":null}}')
    add(D + "json/no-space-after-colon", '{"customization":{"extraKernelArgs":["a"]}}')
    add(D + "json/unquoted-colon-no-space-flow", "{customization:{extraKernelArgs:[a]}}")
    add(D + "json/trailing-comma-object", '{"customization":{"extraKernelArgs":["a"],},}')
    add(D + "json/nested-options-json", j({"overlay": {"name": "nm", "image": "img",
                                                       "options": {"list": [1, 2.5, True, None, "s", {"k": []}]}}}))
    add(D + "json/large-number-option", '{"overlay":{"name":"n","image":"i","options":{"n":12345678901234567890123}}}')
    add(D + "json/float-number-option", '{"overlay":{"name":"n","image":"i","options":{"a":1.0,"b":1e2,"c":-0.5,"d":1E-7}}}')

    # tabs
    add(D + "tabs/indentation", "customization:\n\textraKernelArgs: [a]\n")
    add(D + "tabs/indentation-after-spaces", "customization:\n  \textraKernelArgs: [a]\n")
    add(D + "tabs/after-colon", "customization:\t{extraKernelArgs: [a]}\n")
    add(D + "tabs/in-flow", "customization: {\textraKernelArgs:\t[a,\tb]}\n")
    add(D + "tabs/before-comment", "customization: {}\t# c\n")
    add(D + "tabs/in-block-seq", "customization:\n  extraKernelArgs:\n  -\ta\n")
    add(D + "tabs/in-plain-value", "customization:\n  extraKernelArgs:\n    - a\tb\n")
    add(D + "tabs/trailing-in-plain-value", "customization:\n  extraKernelArgs:\n    - a\t\n")

    # raw characters in input (not escaped)
    add(D + "raw/nel-in-double-quoted", "customization: {extraKernelArgs: [\"a\u0085b\"]}\n")
    add(D + "raw/nel-in-plain", "customization: {extraKernelArgs: [a\u0085b]}\n")
    add(D + "raw/line-separator-in-plain", "customization: {extraKernelArgs: [a\u2028b]}\n")
    add(D + "raw/del-char", "customization: {extraKernelArgs: [\"a\x7fb\"]}\n")
    add(D + "raw/c1-char", "customization: {extraKernelArgs: [\"a\x9bb\"]}\n")
    add(D + "raw/nul-char", "customization: {extraKernelArgs: [\"a\x00b\"]}\n")
    add(D + "raw/vertical-tab", "customization: {extraKernelArgs: [\"a\x0bb\"]}\n")
    add(D + "raw/nbsp-in-plain", "customization: {extraKernelArgs: [a\u00a0b, \u00a0lead]}\n")
    add(D + "raw/emoji-in-plain", "customization: {extraKernelArgs: [😀]}\n")
    add(D + "raw/nonchar-fffe", "customization: {extraKernelArgs: [\"a\ufffeb\"]}\n")
    add(D + "raw/private-use", "customization: {extraKernelArgs: [\ue000]}\n")
    add(D + "raw/cr-in-double-quoted", "customization: {extraKernelArgs: [\"a\rb\"]}\n")

    # syntax errors
    add(D + "syntax/unclosed-flow", "customization: {extraKernelArgs: [a}\n")
    add(D + "syntax/bad-indentation", "customization:\n  extraKernelArgs:\n    - a\n   - b\n")
    add(D + "syntax/mapping-in-plain", "customization: a: b\n")
    add(D + "syntax/unclosed-quote", "customization: {extraKernelArgs: [\"a]}\n")
    add(D + "syntax/tab-only-line", "\t\n")
    add(D + "syntax/stray-close", "}\n")
    add(D + "syntax/anchor-without-name", "customization: & {}\n")
    add(D + "syntax/reserved-at", "customization: {extraKernelArgs: [@a]}\n")
    add(D + "syntax/reserved-backtick", "customization: {extraKernelArgs: [`a]}\n")
    add(D + "syntax/implicit-key-over-1024-chars",
        "overlay: {name: n, image: i, options: {\"" + "k" * 1100 + "\": v}}\n")
    add(D + "explicit-key-over-1024-chars",
        "overlay: {name: n, image: i, options: {? \"" + "k" * 1100 + "\" : v}}\n")
    add(D + "syntax/block-in-flow", "customization: {extraKernelArgs: [- a]}\n")


# --------------------------------------------------------------------------
# running the oracle
# --------------------------------------------------------------------------

def build_oracle(tmp: str) -> str:
    exe = os.path.join(tmp, "schematic-oracle")
    env = dict(os.environ, GOFLAGS="-mod=mod", GOPROXY="off", GOTOOLCHAIN="local")
    subprocess.run(["go", "build", "-o", exe, "."], cwd=ORACLE_DIR, env=env, check=True)
    return exe


def run_oracle(exe: str, inputs: list[str]) -> list[dict]:
    env = dict(os.environ, TZ="UTC")
    proc = subprocess.run([exe, "-roundtrip", "-decoded", "-repeat", "64"], input=json.dumps(inputs).encode(),
                          capture_output=True, check=True, env=env)
    res = json.loads(proc.stdout)
    if len(res) != len(inputs):
        raise SystemExit("oracle returned a different number of results")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oracle", help="use this prebuilt oracle binary instead of building it")
    ap.add_argument("--check", action="store_true", help="do not write; fail if the corpus file differs")
    ap.add_argument("--report", action="store_true", help="print round-trip mismatches and error summary")
    ap.add_argument("--output", default=OUT, help="output path (default: tests/vectors/schematic-ids.json)")
    args = ap.parse_args()

    reference_vectors()
    embeddings()
    overlay_options()
    typed_fields()
    decoding()

    with tempfile.TemporaryDirectory() as tmp:
        exe = args.oracle or build_oracle(tmp)
        results = run_oracle(exe, [doc for _, doc in CASES])

    problems: list[str] = []
    corpus = []
    roundtrip_notes = []
    unstable = []
    for (name, doc), r in zip(CASES, results):
        if r.get("unstable"):
            # go-yaml's own output is not deterministic for this input; it
            # cannot serve as a vector.
            unstable.append(name)
            continue
        if r["input"] != doc:
            problems.append(f"{name}: oracle echoed a different input (not representable as JSON string?)")
        ok = bool(r["ok"])
        entry = {
            "name": name,
            "input": doc,
            "ok": ok,
            "canonical": r.get("canonical") if ok else None,
            "id": r.get("id") if ok else None,
            "error": None if ok else r.get("error", ""),
        }
        if ok:
            digest = hashlib.sha256(entry["canonical"].encode("utf-8")).hexdigest()
            if digest != entry["id"]:
                problems.append(f"{name}: id is not sha256(canonical)")
            if not r.get("roundtrip_ok"):
                roundtrip_notes.append(f"{name}: {r.get('roundtrip_error')}")
        corpus.append(entry)

        # reference expectations
        if name in EXPECTED_IDS and entry["id"] != EXPECTED_IDS[name]:
            problems.append(f"{name}: expected ID {EXPECTED_IDS[name]}, oracle gave {entry['id']} "
                            f"(error={entry['error']!r})")
        if name in EXPECTED_CANONICAL and entry["canonical"] != EXPECTED_CANONICAL[name]:
            problems.append(f"{name}: expected canonical {EXPECTED_CANONICAL[name]!r}, got {entry['canonical']!r}")
        if name in EXPECTED_SNIPPET and EXPECTED_SNIPPET[name] not in (entry["canonical"] or ""):
            problems.append(f"{name}: canonical {entry['canonical']!r} lacks {EXPECTED_SNIPPET[name]!r}")
        if name in EXPECTED_ERROR and entry["error"] != EXPECTED_ERROR[name]:
            problems.append(f"{name}: expected error {EXPECTED_ERROR[name]!r}, got {entry['error']!r}")

        # sanity: string embeddings decode to exactly the intended value
        if name in EMBEDDED:
            where, value = EMBEDDED[name]
            if not ok:
                problems.append(f"{name}: embedding failed to decode: {entry['error']}")
                continue
            d = r["decoded"]
            cust, overlay = d["customization"], d["overlay"]
            if where == "eka":
                got = cust["extraKernelArgs"]
                want = [value]
            elif where == "meta":
                got = cust["meta"]
                want = [{"key": 1, "value": value}]
            elif where == "emc":
                got = cust["embeddedMachineConfiguration"]
                want = value
            elif where == "optkey":
                got = overlay["options"]
                want = {value: "v"}
            else:
                got = overlay["options"]
                want = {"k": value}
            if got != want:
                problems.append(f"{name}: decoded {got!r}, intended {want!r}")

    # sanity: inputs written in different styles must mean the same thing
    by_name = {e["name"]: e for e in corpus}
    for group in EQUIVALENT:
        ids = {by_name[n]["id"] for n in group if n in by_name}
        if len(ids) != 1 or None in ids:
            problems.append(f"equivalence group {group} gave {ids}")

    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"{len(problems)} problem(s); corpus NOT written", file=sys.stderr)
        return 1

    text = json.dumps(corpus, ensure_ascii=False, indent=2) + "\n"

    if unstable:
        print(f"left out {len(unstable)} case(s) whose go-yaml output is not deterministic: "
              + ", ".join(unstable), file=sys.stderr)

    if args.report:
        print(f"round-trip notes ({len(roundtrip_notes)}):")
        for n in roundtrip_notes:
            print("  " + n)
        errs: dict[str, int] = {}
        for e in corpus:
            if not e["ok"]:
                key = e["error"].split("\n")[-1].strip()
                errs[key] = errs.get(key, 0) + 1
        print(f"distinct error messages ({len(errs)}):")
        for k, v in sorted(errs.items(), key=lambda kv: -kv[1]):
            print(f"  {v:4d}  {k}")

    n_ok = sum(1 for e in corpus if e["ok"])
    summary = (f"{len(corpus)} cases ({n_ok} ok, {len(corpus) - n_ok} errors, "
               f"{len(set(e['id'] for e in corpus if e['ok']))} distinct IDs), "
               f"{len(EXPECTED_IDS)} reference IDs verified, {len(roundtrip_notes)} round-trip notes")

    if args.check:
        try:
            with open(args.output, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"{args.output} is stale; regenerate with: python3 tests/oracle/gen-vectors.py", file=sys.stderr)
            return 1
        print("up to date: " + summary)
        return 0

    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(args.output, ROOT)}: " + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
