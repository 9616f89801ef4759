//! The random schematic generator and the Go oracle runner shared by
//! `tests/schematic_differential.rs` and `tests/schematic_roundtrip.rs`.
//!
//! Include with `#[path = "support/schematic_gen.rs"] mod schematic_gen;`.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

/// Pieces that exercise go-yaml's quoting rules when concatenated.
pub const PIECES: &[&str] = &[
    "a",
    "b",
    "x",
    "foo",
    "key",
    "1",
    "0",
    "10",
    "0x1F",
    "0o17",
    "0b11",
    "1_000",
    "1.5",
    ".5",
    "1e3",
    "-",
    "+",
    ".",
    ":",
    ": ",
    " :",
    "#",
    " #",
    "'",
    "\"",
    "\\",
    "?",
    "? ",
    "- ",
    ",",
    "[",
    "]",
    "{",
    "}",
    "&",
    "*",
    "!",
    "|",
    ">",
    "%",
    "@",
    "`",
    "~",
    "<<",
    " ",
    "  ",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "true",
    "False",
    "NULL",
    "null",
    ".inf",
    "-.Inf",
    ".NaN",
    "1:20",
    "12:30",
    "2001-12-14",
    "2001-12-14T21:59:43Z",
    "é",
    "ü",
    "日本",
    "😀",
    "\u{2028}",
    "\u{85}",
    "\u{a0}",
    "\u{feff}",
    "\u{1b}",
    "---",
    "...",
    "=",
    "/",
    "x=y",
    "console=ttyS0,115200",
    "siderolabs/",
    "a b",
    "0.",
    "00",
    "08",
    "-0b1",
    "1__",
    "1e999",
];

/// Whitespace that makes a value start or end a block scalar awkwardly (libyaml's emitter
/// then writes indentation indicators such as `|4-`).
pub const EDGES: &[&str] = &[
    " ", "  ", "\t", "\n", "\n\n", " \n", "\n ", "\t\n", "\n\t", "\r\n", "\u{a0}", "\u{3000}",
];

/// How adventurous the generator is: `plain` is the historical distribution of the
/// differential test (kept so its seeded cases stay the same), `tricky` adds leading and
/// trailing whitespace/newlines/tabs, more Unicode, long and multi-line overlay option keys
/// and deeper nesting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The original distribution.
    Plain,
    /// The extended distribution.
    Tricky,
}

pub fn random_string(rng: &mut StdRng) -> String {
    string_of(rng, Flavor::Plain)
}

pub fn string_of(rng: &mut StdRng, flavor: Flavor) -> String {
    let n = rng.random_range(0..5);
    let mut s: String = (0..n)
        .map(|_| PIECES[rng.random_range(0..PIECES.len())])
        .collect();
    if flavor == Flavor::Tricky {
        if rng.random_bool(0.3) {
            s.insert_str(0, EDGES[rng.random_range(0..EDGES.len())]);
        }
        if rng.random_bool(0.15) {
            s.push_str(EDGES[rng.random_range(0..EDGES.len())]);
        }
    }
    s
}

/// An overlay option key: in the tricky flavor sometimes multi-line or longer than the
/// 128 bytes libyaml writes as a simple key (both become `? ` complex keys).
fn option_key(rng: &mut StdRng, flavor: Flavor) -> String {
    if flavor == Flavor::Tricky {
        match rng.random_range(0..10) {
            0 => return format!("{}\n{}", string_of(rng, flavor), string_of(rng, flavor)),
            1 => {
                let mut k = string_of(rng, flavor);
                while k.len() <= 128 {
                    k.push_str(PIECES[rng.random_range(0..PIECES.len())]);
                }
                return k;
            }
            _ => {}
        }
    }
    string_of(rng, flavor)
}

pub fn random_any(rng: &mut StdRng, depth: u32) -> Value {
    any_of(rng, depth, Flavor::Plain)
}

fn any_of(rng: &mut StdRng, depth: u32, flavor: Flavor) -> Value {
    let max_depth = if flavor == Flavor::Tricky { 4 } else { 2 };
    match rng.random_range(0..if depth > max_depth { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 => json!(rng.random_range(-1000i64..1_000_000)),
        3 => {
            let f = [0.5, 1e6, 1e21, 1e-5, 123456789.0, -0.25][rng.random_range(0..6)];
            json!(f)
        }
        4 | 5 => json!(string_of(rng, flavor)),
        6 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| any_of(rng, depth + 1, flavor))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.random_range(0..4) {
                m.insert(option_key(rng, flavor), any_of(rng, depth + 1, flavor));
            }
            Value::Object(m)
        }
    }
}

pub fn random_schematic(rng: &mut StdRng) -> Value {
    schematic_of(rng, Flavor::Plain)
}

pub fn schematic_of(rng: &mut StdRng, flavor: Flavor) -> Value {
    let random_string = |rng: &mut StdRng| string_of(rng, flavor);
    let mut customization = serde_json::Map::new();
    let strings = |rng: &mut StdRng, max: usize| -> Value {
        Value::Array(
            (0..rng.random_range(0..max))
                .map(|_| json!(random_string(rng)))
                .collect(),
        )
    };
    if rng.random_bool(0.6) {
        customization.insert("extraKernelArgs".into(), strings(rng, 5));
    }
    if rng.random_bool(0.4) {
        let meta: Vec<Value> = (0..rng.random_range(0..3))
            .map(|_| json!({"key": rng.random_range(0..256), "value": random_string(rng)}))
            .collect();
        customization.insert("meta".into(), Value::Array(meta));
    }
    if rng.random_bool(0.4) {
        customization.insert(
            "systemExtensions".into(),
            json!({"officialExtensions": strings(rng, 4)}),
        );
    }
    if rng.random_bool(0.3) {
        let lines: Vec<String> = (0..rng.random_range(0..4))
            .map(|_| random_string(rng))
            .collect();
        customization.insert(
            "embeddedMachineConfiguration".into(),
            json!(lines.join("\n")),
        );
    }
    if rng.random_bool(0.2) {
        let b = ["none", "dual-boot", "sd-boot", "grub", "GRUB"][rng.random_range(0..5)];
        customization.insert("bootloader".into(), json!(b));
    }
    if rng.random_bool(0.2) {
        customization.insert(
            "secureboot".into(),
            json!({"enrollKeys": random_string(rng), "includeWellKnownCertificates": rng.random_bool(0.5)}),
        );
    }
    if rng.random_bool(0.2) {
        let size = [0, 512, 4096][rng.random_range(0..3)];
        customization.insert("diskImage".into(), json!({ "sectorSize": size }));
    }
    let mut root = serde_json::Map::new();
    if rng.random_bool(0.3) {
        let mut options = serde_json::Map::new();
        for _ in 0..rng.random_range(0..5) {
            options.insert(option_key(rng, flavor), any_of(rng, 0, flavor));
        }
        root.insert(
            "overlay".into(),
            json!({"name": random_string(rng), "image": random_string(rng), "options": options}),
        );
    }
    root.insert("customization".into(), Value::Object(customization));
    Value::Object(root)
}

pub fn build_oracle() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/schematic-oracle");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schematic-oracle");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&dir)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env(
            "GOCACHE",
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gocache"),
        )
        .status()
        .ok()?;
    status.success().then_some(out)
}

/// A generated schematic as the JSON text a client would send. Raw U+0085/U+2028/U+2029 are
/// line breaks to libyaml's scanner (see ARCHITECTURE.md, "known deviations"); JSON clients
/// escape them, as Go's encoder does.
pub fn to_input(value: &Value) -> String {
    serde_json::to_string(value)
        .unwrap()
        .replace('\u{85}', "\\u0085")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Runs the oracle over `inputs` (with `-roundtrip` if asked); one result object per input.
pub fn run_oracle(oracle: &PathBuf, inputs: &[String], roundtrip: bool) -> Vec<Value> {
    let mut cmd = Command::new(oracle);
    if roundtrip {
        cmd.arg("-roundtrip");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run oracle");
    let mut stdin = child.stdin.take().unwrap();
    let payload = serde_json::to_string(inputs).unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(payload.as_bytes()));
    let output = child.wait_with_output().expect("oracle output");
    writer.join().unwrap().expect("write oracle input");
    assert!(output.status.success(), "oracle failed");
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).expect("oracle JSON");
    assert_eq!(results.len(), inputs.len());
    results
}

/// The oracle binary, or `None` (with a note) when Go or yaml.v3 is missing — an error when
/// `BOOTFACTORY_REQUIRE_ORACLE=1`.
pub fn oracle_or_skip() -> Option<PathBuf> {
    let oracle = build_oracle();
    if oracle.is_none() {
        assert!(
            std::env::var("BOOTFACTORY_REQUIRE_ORACLE").as_deref() != Ok("1"),
            "the Go oracle could not be built (apt-get install golang-go golang-gopkg-yaml.v3-dev)"
        );
        eprintln!("note: Go or gopkg.in/yaml.v3 is not installed; oracle checks skipped");
    }
    oracle
}
