//! Byte-for-byte reproductions of the Go standard library and go-yaml behaviour that
//! upstream's outputs depend on. The Image Factory is written in Go: its schematic IDs hash
//! gopkg.in/yaml.v3's output, its error texts quote values with `strconv.Quote`, its JSON
//! answers are `encoding/json`'s. Everything that has to match those bytes lives here, once,
//! with no dependency on the rest of the crate (it is a leaf: see ARCHITECTURE.md, Invariants).
//!
//! - [`strconv`]: `strconv.Quote` (`%q`), used in upstream's error texts.
//! - [`json`]: `encoding/json` encoding (HTML-safe escapes, trailing newline).
//! - [`mime`]: `mime.TypeByExtension` with Go's built-in table, `filepath.Ext`.
//! - [`yaml`]: gopkg.in/yaml.v3 v3.0.1 — scalar resolution (`resolve.go`), the emitter
//!   (`emitterc.go`: styles, indentation, line folding), float formatting and key order
//!   (`sorter.go`), with the Unicode tables they need. The reader that mimics go-yaml's
//!   decoder on top of a Rust YAML parser stays in `schematic` (its limits are the
//!   schematic's).

pub mod json;
pub mod mime;
pub mod strconv;
pub mod yaml;
