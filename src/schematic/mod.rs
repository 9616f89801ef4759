//! Schematics: the upstream Image Factory model, parsing (YAML or JSON) with go-yaml's rules,
//! the canonical YAML, and the ID (`sha256` of the canonical YAML), byte-identical to upstream.
//!
//! ```
//! let s = bootfactory::schematic::parse(b"customization: {}").unwrap();
//! assert_eq!(s.id().as_str(), "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba");
//! ```

mod canonical;
mod decode;
pub(crate) mod model;
pub mod storage;
mod tree;
/// The bounded, go-yaml-compatible YAML reader schematics are parsed with, for other YAML
/// that comes from strangers (extension manifests).
pub(crate) mod yaml_tree {
    pub(crate) use super::tree::{Document, Node, NodeKind, parse_first_document, resolve_node};
}

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

pub use canonical::options_yaml;
pub use decode::FieldError;
pub use model::{
    AnyValue, Bootloader, Customization, DiskImage, MetaValue, Overlay, Schematic, SecureBoot,
    SystemExtensions,
};
pub use storage::SchematicStore;

/// The largest schematic document accepted (the HTTP API's body limit as well).
pub const MAX_SCHEMATIC_BYTES: usize = 1024 * 1024;

/// The largest canonical YAML accepted: what is stored, hashed into the ID and served.
/// Indentation and escapes can make it longer than the document it came from, so it is
/// checked separately (while emitting, never building more than this).
pub const MAX_CANONICAL_BYTES: usize = MAX_SCHEMATIC_BYTES;

/// The most text a document may expand to through aliases: scalar values and tags, each alias
/// counted at the size of what it repeats (see also the 100,000-node limit).
pub const MAX_EXPANDED_BYTES: usize = tree::MAX_EXPANDED_BYTES;

/// A schematic ID: 64 lowercase hex digits, the SHA-256 of the canonical YAML.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchematicId(String);

impl SchematicId {
    /// The ID as 64 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SchematicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SchematicId {
    type Err = SchematicError;

    /// Accepts exactly 64 lowercase hex digits (upstream treats anything else as not found).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(SchematicId(s.to_string()))
        } else {
            Err(SchematicError::InvalidId(s.chars().take(80).collect()))
        }
    }
}

/// Why a schematic was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchematicError {
    /// The document is larger than [`MAX_SCHEMATIC_BYTES`].
    #[error("schematic is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The bytes are not UTF-8 text.
    #[error("schematic is not valid UTF-8 text")]
    NotUtf8,
    /// The input holds no document (empty or only comments); upstream answers `EOF`.
    #[error("EOF: the schematic document is empty")]
    Empty,
    /// The text is not valid YAML/JSON.
    #[error("{0}")]
    Syntax(String),
    /// Valid YAML that passes a resource limit once read: nesting depth, node count, or the
    /// text it expands to through aliases ([`MAX_EXPANDED_BYTES`]).
    #[error("{0}")]
    Limit(String),
    /// The canonical YAML would be longer than [`MAX_CANONICAL_BYTES`].
    #[error("schematic is refused: its canonical YAML would be larger than {limit} bytes")]
    CanonicalTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The canonical YAML (go-yaml's encoding, which the ID hashes) does not read back as the
    /// same schematic, so it could be stored but never served; upstream has the same problem.
    #[error(
        "schematic is refused: its canonical YAML does not read back as the same schematic \
         ({0}); values that start with spaces, tabs or line breaks are the usual cause"
    )]
    NotRoundTrip(String),
    /// Unknown fields, wrong types, out-of-range values.
    #[error("yaml: unmarshal errors:\n  {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Fields(Vec<FieldError>),
    /// `owner` is set: only upstream's enterprise edition supports it.
    #[error("owner field is only supported in Enterprise edition")]
    OwnerNotSupported,
    /// A string that is not a schematic ID.
    #[error("invalid schematic ID {0:?}: want 64 lowercase hex digits")]
    InvalidId(String),
}

/// Parses a schematic from YAML or JSON bytes (JSON is YAML). Only the first document is read.
/// The result is validated for this edition (see [`validate`]) and its canonical YAML is
/// checked with [`Schematic::checked_canonical`], so whatever `parse` accepts can be stored
/// and read back.
///
/// A fuzz target checks the round trip with public functions only:
///
/// ```
/// use bootfactory::schematic::{parse, id_of_canonical};
/// let s = parse(b"customization: {extraKernelArgs: [' a']}").unwrap();
/// let canonical = s.canonical_yaml();
/// let again = parse(canonical.as_bytes()).unwrap();
/// assert_eq!(again.canonical_yaml(), canonical);
/// assert_eq!(again.id(), s.id());
/// assert_eq!(id_of_canonical(canonical.as_bytes()), s.id());
/// ```
pub fn parse(input: &[u8]) -> Result<Schematic, SchematicError> {
    let schematic = decode(input)?;
    validate(&schematic)?;
    schematic.checked_canonical()?;
    Ok(schematic)
}

/// Decodes a schematic exactly as upstream's decoder does, without this edition's validation
/// (so an enterprise `owner` is kept). Prefer [`parse`].
pub fn decode(input: &[u8]) -> Result<Schematic, SchematicError> {
    if input.len() > MAX_SCHEMATIC_BYTES {
        return Err(SchematicError::TooLarge {
            limit: MAX_SCHEMATIC_BYTES,
        });
    }
    let text = std::str::from_utf8(input).map_err(|_| SchematicError::NotUtf8)?;
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let root = match tree::parse_first_document(text) {
        Ok(tree::Document::Root(root)) => root,
        Ok(tree::Document::Empty) => return Err(SchematicError::Empty),
        Err(e) if e.limit => return Err(SchematicError::Limit(e.message)),
        Err(e) => return Err(SchematicError::Syntax(e.message)),
    };
    decode::decode_schematic(&root).map_err(SchematicError::Fields)
}

/// Parses overlay options written as YAML (a mapping, as upstream's web UI reads its
/// "overlay options" field into `map[string]any`): empty text or `null` is no options; at
/// most [`MAX_SCHEMATIC_BYTES`], with the same limits as a schematic document.
pub fn parse_overlay_options(text: &str) -> Result<Vec<(String, AnyValue)>, SchematicError> {
    if text.len() > MAX_SCHEMATIC_BYTES {
        return Err(SchematicError::TooLarge {
            limit: MAX_SCHEMATIC_BYTES,
        });
    }
    let root = match tree::parse_first_document(text) {
        Ok(tree::Document::Root(root)) => root,
        Ok(tree::Document::Empty) => return Ok(Vec::new()),
        Err(e) if e.limit => return Err(SchematicError::Limit(e.message)),
        Err(e) => return Err(SchematicError::Syntax(e.message)),
    };
    decode::decode_options(&root).map_err(SchematicError::Fields)
}

/// Checks what this (community) edition refuses: a non-empty `owner`, like upstream.
pub fn validate(s: &Schematic) -> Result<(), SchematicError> {
    if !s.owner.is_empty() {
        return Err(SchematicError::OwnerNotSupported);
    }
    Ok(())
}

impl Schematic {
    /// The canonical YAML: byte for byte what upstream's `yaml.Marshal` emits.
    pub fn canonical_yaml(&self) -> String {
        canonical::canonical_yaml(self)
    }

    /// The schematic ID: SHA-256 of the canonical YAML.
    pub fn id(&self) -> SchematicId {
        id_of_canonical(self.canonical_yaml().as_bytes())
    }

    /// The canonical YAML, checked for storage: at most [`MAX_CANONICAL_BYTES`] (never
    /// building more), and it reads back ([`decode`]) as this schematic with the same bytes,
    /// so the same ID. go-yaml writes some values (e.g. a line break then a tab, or a leading
    /// space in a list item) as block scalars that no YAML reader, go-yaml included, reads
    /// back; such schematics are refused with [`SchematicError::NotRoundTrip`].
    pub fn checked_canonical(&self) -> Result<String, SchematicError> {
        self.checked().map(|(canonical, _)| canonical)
    }

    /// [`Self::checked_canonical`] and the schematic as read back from it (what a later read
    /// of the stored bytes gives: overlay options in canonical order, `1000.0` as `1000`).
    pub(crate) fn checked(&self) -> Result<(String, Schematic), SchematicError> {
        let canonical = canonical::canonical_yaml_limited(self, MAX_CANONICAL_BYTES).ok_or(
            SchematicError::CanonicalTooLarge {
                limit: MAX_CANONICAL_BYTES,
            },
        )?;
        let back = decode(canonical.as_bytes())
            .map_err(|e| SchematicError::NotRoundTrip(e.to_string()))?;
        if let Some(field) = first_difference(self, &back) {
            return Err(SchematicError::NotRoundTrip(format!(
                "{field} reads back differently"
            )));
        }
        if canonical::canonical_yaml_limited(&back, MAX_CANONICAL_BYTES).as_deref()
            != Some(canonical.as_str())
        {
            return Err(SchematicError::NotRoundTrip(
                "reading it back changes the canonical YAML and the ID".to_string(),
            ));
        }
        Ok((canonical, back))
    }
}

/// The first typed field that differs between two schematics (overlay options are compared
/// through their canonical form by the caller: their order and number types may change).
fn first_difference(a: &Schematic, b: &Schematic) -> Option<&'static str> {
    let (ca, cb) = (&a.customization, &b.customization);
    [
        ("owner", a.owner == b.owner),
        ("overlay.image", a.overlay.image == b.overlay.image),
        ("overlay.name", a.overlay.name == b.overlay.name),
        (
            "customization.embeddedMachineConfiguration",
            ca.embedded_machine_configuration == cb.embedded_machine_configuration,
        ),
        (
            "customization.extraKernelArgs",
            ca.extra_kernel_args == cb.extra_kernel_args,
        ),
        ("customization.meta", ca.meta == cb.meta),
        (
            "customization.systemExtensions",
            ca.system_extensions == cb.system_extensions,
        ),
        ("customization.bootloader", ca.bootloader == cb.bootloader),
        ("customization.secureboot", ca.secureboot == cb.secureboot),
        ("customization.diskImage", ca.disk_image == cb.disk_image),
    ]
    .into_iter()
    .find(|(_, same)| !same)
    .map(|(field, _)| field)
}

/// The ID of already-canonical YAML bytes.
pub fn id_of_canonical(canonical: &[u8]) -> SchematicId {
    SchematicId(hex::encode(Sha256::digest(canonical)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(input: &str) -> String {
        parse(input.as_bytes()).unwrap().id().to_string()
    }

    #[test]
    fn upstream_vectors() {
        let empty = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
        assert_eq!(id("customization: {}"), empty);
        assert_eq!(id("{}"), empty);
        assert_eq!(id(r#"customization: {"extraKernelArgs": []}"#), empty);
        assert_eq!(
            id(r#"{"customization": {"extraKernelArgs": ["noapic", "nolapic"]}}"#),
            "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c"
        );
        assert_eq!(
            id(
                r#"{"customization": {"meta": [{"key": 10, "value": "foo"}], "extraKernelArgs": [], "systemExtensions": {}}}"#
            ),
            "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f"
        );
        assert_eq!(
            id(
                r#"{"overlay": {"name": "rpi_generic", "image": "siderolabs/sbc-raspberrypi"},"customization":{}}"#
            ),
            "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9"
        );
    }

    #[test]
    fn errors_name_the_offending_field() {
        let e = parse(b"something:").unwrap_err();
        assert!(e.to_string().contains("field something not found"), "{e}");
        let e = parse(b"customization:\n  meta:\n    - key: 256\n      value: x\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("customization.meta[0].key"), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert_eq!(parse(b"").unwrap_err(), SchematicError::Empty);
        assert_eq!(parse(b"# nothing\n").unwrap_err(), SchematicError::Empty);
        assert_eq!(
            parse(b"owner: alice").unwrap_err(),
            SchematicError::OwnerNotSupported
        );
        assert!(matches!(
            parse(b"customization: [").unwrap_err(),
            SchematicError::Syntax(_)
        ));
    }

    #[test]
    fn ids_parse_strictly() {
        assert!(SchematicId::from_str(&"a".repeat(64)).is_ok());
        assert!(SchematicId::from_str(&"A".repeat(64)).is_err());
        assert!(SchematicId::from_str("aaaa").is_err());
        assert!(SchematicId::from_str(&format!("{}/", "a".repeat(63))).is_err());
    }
}
