//! Extension manifests (`manifest.yaml`, Talos `pkg/machinery/extensions`): loading, the
//! checks Talos's loader and the imager make, and the metadata as written back into
//! `extensions.yaml`.

use std::fs;
use std::path::Path;

use crate::gocompat::yaml::resolve::ShortTag;
use crate::schematic::yaml_tree::{
    Document, Node as YamlNode, NodeKind, parse_first_document, resolve_node,
};

use super::constraint::{Range, Version};
use super::yaml::Node;

/// The only manifest version Talos accepts.
pub(crate) const MANIFEST_VERSION: &str = "v1alpha1";

/// The `metadata` block, field for field as Talos declares it (this is also the order
/// yaml.v3 writes it in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtensionMetadata {
    /// `name`.
    pub name: String,
    /// `version` (free form).
    pub version: String,
    /// `author`.
    pub author: String,
    /// `description`.
    pub description: String,
    /// `compatibility.talos.version`: a version range, empty for "any".
    pub talos_version_constraint: String,
    /// `extraInfo` (omitted when empty).
    pub extra_info: String,
}

impl ExtensionMetadata {
    fn is_empty(&self) -> bool {
        *self == ExtensionMetadata::default()
    }

    /// The metadata as a YAML mapping in Talos's field order.
    pub(crate) fn to_node(&self) -> Node {
        let mut m = vec![
            ("name", Node::str(&self.name)),
            ("version", Node::str(&self.version)),
            ("author", Node::str(&self.author)),
            ("description", Node::str(&self.description)),
            (
                "compatibility",
                Node::Map(vec![(
                    "talos",
                    Node::Map(vec![("version", Node::str(&self.talos_version_constraint))]),
                )]),
            ),
        ];
        if !self.extra_info.is_empty() {
            m.push(("extraInfo", Node::str(&self.extra_info)));
        }
        Node::Map(m)
    }

    /// The whole `manifest.yaml` (yaml.v3 `Marshal` of the Talos manifest).
    pub(crate) fn manifest_yaml(&self) -> String {
        super::yaml::document(&[
            ("version", Node::str(MANIFEST_VERSION)),
            ("metadata", self.to_node()),
        ])
    }
}

/// A scalar as go-yaml decodes it into a Go `string` field: the scalar's text as written
/// (`0x10` stays `0x10`), null → "", a missing field → "".
fn string_field(node: Option<&YamlNode>, field: &str) -> Result<String, String> {
    let Some(node) = node else {
        return Ok(String::new());
    };
    match &node.kind {
        NodeKind::Scalar { value, .. } => Ok(match resolve_node(node).0 {
            ShortTag::Null => String::new(),
            _ => value.clone(),
        }),
        NodeKind::Sequence(_) | NodeKind::Mapping(_) => {
            Err(format!("manifest.yaml: {field} must be a string"))
        }
    }
}

/// The value of `key` in a mapping node (the last one, if repeated); `None` if `node` is not a
/// mapping or has no such key.
fn get<'a>(node: Option<&'a YamlNode>, key: &str) -> Option<&'a YamlNode> {
    let NodeKind::Mapping(entries) = &node?.kind else {
        return None;
    };
    entries
        .iter()
        .rev()
        .find(|(k, _)| matches!(&k.kind, NodeKind::Scalar { value, .. } if value == key))
        .map(|(_, v)| v)
}

fn is_null(node: &YamlNode) -> bool {
    matches!(node.kind, NodeKind::Scalar { .. }) && resolve_node(node).0 == ShortTag::Null
}

/// Parses `manifest.yaml` text: `(manifest version, metadata)`.
///
/// The text comes from an imported extension image, so it is read with the same bounded,
/// go-yaml-compatible reader as schematics ([`crate::schematic::yaml_tree`]): aliases are
/// expanded with node and byte limits (a "billion laughs" manifest is refused, not
/// expanded), and line breaks (LF, CR, NEL, LS, PS) fold like libyaml's, so the values are
/// the ones Talos reads with go-yaml.
pub(crate) fn parse_manifest(text: &str) -> Result<(String, ExtensionMetadata), String> {
    let root = match parse_first_document(text) {
        Ok(Document::Root(root)) => root,
        Ok(Document::Empty) => return Err("manifest.yaml is empty".to_string()),
        Err(e) => return Err(format!("manifest.yaml is not valid YAML: {}", e.message)),
    };
    if !matches!(root.kind, NodeKind::Mapping(_)) {
        return Err("manifest.yaml is not a mapping".to_string());
    }
    let doc = Some(&root);
    let version = string_field(get(doc, "version"), "version")?;
    let md = get(doc, "metadata");
    if let Some(md) = md
        && !matches!(md.kind, NodeKind::Mapping(_))
        && !is_null(md)
    {
        return Err("manifest.yaml: metadata must be a mapping".to_string());
    }
    let talos = get(get(get(md, "compatibility"), "talos"), "version");
    let metadata = ExtensionMetadata {
        name: string_field(get(md, "name"), "metadata.name")?,
        version: string_field(get(md, "version"), "metadata.version")?,
        author: string_field(get(md, "author"), "metadata.author")?,
        description: string_field(get(md, "description"), "metadata.description")?,
        talos_version_constraint: string_field(talos, "metadata.compatibility.talos.version")?,
        extra_info: string_field(get(md, "extraInfo"), "metadata.extraInfo")?,
    };
    Ok((version, metadata))
}

/// Checks that `metadata`, written the way Talos writes it into `extensions.yaml` (go-yaml's
/// bytes), can be read back. go-yaml writes some values it cannot read (a raw U+2028 in a
/// single-quoted scalar followed by spaces: "invalid indentation in quoted scalar"); an
/// initramfs carrying such an `extensions.yaml` would fail at boot, so the extension is refused
/// when the build starts instead (found by fuzzing).
pub(crate) fn check_writable(metadata: &ExtensionMetadata) -> Result<(), String> {
    parse_manifest(&metadata.manifest_yaml())
        .map(|_| ())
        .map_err(|e| format!("its metadata cannot be written as YAML that reads back ({e})"))
}

/// What is wrong with an extension directory, and the name to report it under (the manifest's
/// `metadata.name` when it could be read).
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) name: Option<String>,
    pub(crate) reason: String,
}

/// Loads and checks an extension directory (`manifest.yaml` + `rootfs/`, nothing else) for
/// target Talos version `target`.
pub(crate) fn load_extension(
    dir: &Path,
    target: (u64, u64, u64),
) -> Result<ExtensionMetadata, Rejection> {
    let reject = |name: Option<&str>, reason: String| Rejection {
        name: name.map(str::to_string),
        reason,
    };
    let read =
        fs::read_dir(dir).map_err(|e| reject(None, format!("cannot list directory: {e}")))?;
    let mut names = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| reject(None, format!("cannot list directory: {e}")))?;
        names.push(entry.file_name());
    }
    names.sort();

    let manifest_path = dir.join("manifest.yaml");
    let parsed = match fs::symlink_metadata(&manifest_path) {
        Ok(m) if m.is_file() => {
            let text = fs::read_to_string(&manifest_path)
                .map_err(|e| reject(None, format!("cannot read manifest.yaml: {e}")))?;
            parse_manifest(&text).map_err(|e| reject(None, e))?
        }
        Ok(_) => return Err(reject(None, "manifest.yaml is not a regular file".into())),
        Err(_) => return Err(reject(None, "missing manifest.yaml".into())),
    };
    let (version, metadata) = parsed;
    let name = (!metadata.name.is_empty()).then_some(metadata.name.as_str());
    check_writable(&metadata).map_err(|e| reject(name, e))?;

    for n in &names {
        if n != "manifest.yaml" && n != "rootfs" {
            return Err(reject(
                name,
                format!(
                    "unexpected file {:?} next to manifest.yaml and rootfs/ (an extension image \
                     must contain exactly those two top-level entries)",
                    n.to_string_lossy()
                ),
            ));
        }
    }
    match fs::symlink_metadata(dir.join("rootfs")) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(reject(name, "rootfs is not a directory".into())),
        Err(_) => return Err(reject(name, "missing rootfs/ directory".into())),
    }
    if version != MANIFEST_VERSION {
        return Err(reject(
            name,
            format!("unsupported manifest version {version:?} (want {MANIFEST_VERSION})"),
        ));
    }
    if metadata.is_empty() {
        return Err(reject(name, "manifest.yaml has empty metadata".into()));
    }
    let constraint = &metadata.talos_version_constraint;
    let range = Range::parse(constraint)
        .map_err(|e| reject(name, format!("error parsing Talos version constraint: {e}")))?;
    if !range.matches(&Version::release(target.0, target.1, target.2)) {
        return Err(reject(
            name,
            format!(
                "version constraint {constraint:?} can't be satisfied with Talos version v{}.{}.{}",
                target.0, target.1, target.2
            ),
        ));
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GVISOR: &str = "version: v1alpha1\nmetadata:\n  name: gvisor\n  version: \"20250505.0\"\n  \
                          author: Sidero Labs\n  description: |\n    [extra] gVisor.\n  \
                          compatibility:\n    talos:\n      version: \">= v1.9.0\"\n";

    /// Values read as Talos reads them with go-yaml (checked against gopkg.in/yaml.v3
    /// v3.0.1): a scalar's text as written, null as "", LS folding like a line break.
    #[test]
    fn values_read_like_go_yaml() {
        let (_, md) = parse_manifest(
            "version: v1alpha1\nmetadata:\n  name: 0x10\n  version: 1.50\n  author: ~\n  \
             description: 'a\u{2028}        b'\n  extraInfo: yes\n",
        )
        .unwrap();
        assert_eq!(md.name, "0x10");
        assert_eq!(md.version, "1.50");
        assert_eq!(md.author, "");
        assert_eq!(md.description, "a\u{2028}b");
        assert_eq!(md.extra_info, "yes");
    }

    /// A manifest comes from an imported image: alias expansion is bounded like a schematic's
    /// (yaml-rust2's loader, used before, copied every alias without a limit).
    #[test]
    fn an_alias_bomb_manifest_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        text.push_str("version: v1alpha1\nmetadata:\n  name: bomb\n");
        let err = parse_manifest(&text).unwrap_err();
        assert!(err.contains("not valid YAML"), "{err}");
    }

    /// Found by fuzzing: go-yaml writes this name (a raw U+2028 in a single-quoted scalar,
    /// then spaces) in a form it cannot read back; the extension is refused, not built into an
    /// `extensions.yaml` that would fail at boot.
    #[test]
    fn metadata_that_cannot_be_written_back_is_refused() {
        let text = include_str!(
            "../../../fuzz/regressions/extension_manifest/line-separator-breaks-quoted-indentation.yaml"
        );
        let (_, md) = parse_manifest(text).unwrap();
        let err = check_writable(&md).unwrap_err();
        assert!(err.contains("cannot be written"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        ext(dir.path(), text);
        let rejection = load_extension(dir.path(), (1, 11, 6)).unwrap_err();
        assert!(
            rejection.reason.contains("cannot be written"),
            "{}",
            rejection.reason
        );
    }

    fn ext(dir: &Path, manifest: &str) {
        fs::create_dir_all(dir.join("rootfs")).unwrap();
        fs::write(dir.join("manifest.yaml"), manifest).unwrap();
    }

    #[test]
    fn parses_and_rewrites_metadata() {
        let (v, md) = parse_manifest(GVISOR).unwrap();
        assert_eq!(v, "v1alpha1");
        assert_eq!(md.name, "gvisor");
        assert_eq!(md.version, "20250505.0");
        assert_eq!(md.description, "[extra] gVisor.\n");
        assert_eq!(md.talos_version_constraint, ">= v1.9.0");
        assert_eq!(
            md.manifest_yaml(),
            "version: v1alpha1\nmetadata:\n    name: gvisor\n    version: \"20250505.0\"\n    \
             author: Sidero Labs\n    description: |\n        [extra] gVisor.\n    \
             compatibility:\n        talos:\n            version: '>= v1.9.0'\n"
        );
        // Unquoted numbers keep their text, as when go-yaml decodes into a string.
        let (_, md) =
            parse_manifest("version: v1alpha1\nmetadata:\n  name: x\n  version: 1.10\n").unwrap();
        assert_eq!(md.version, "1.10");
    }

    #[test]
    fn checks_layout_version_and_constraint() {
        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join("good");
        ext(&good, GVISOR);
        assert_eq!(load_extension(&good, (1, 11, 6)).unwrap().name, "gvisor");

        let e = load_extension(&good, (1, 8, 4)).unwrap_err();
        assert_eq!(e.name.as_deref(), Some("gvisor"));
        assert!(e.reason.contains("can't be satisfied"), "{}", e.reason);

        let extra = tmp.path().join("extra");
        ext(&extra, GVISOR);
        fs::write(extra.join("README.md"), "x").unwrap();
        let e = load_extension(&extra, (1, 11, 6)).unwrap_err();
        assert!(e.reason.contains("README.md"), "{}", e.reason);

        let old = tmp.path().join("old");
        ext(&old, &GVISOR.replace("v1alpha1", "v1alpha2"));
        assert!(
            load_extension(&old, (1, 11, 6))
                .unwrap_err()
                .reason
                .contains("unsupported manifest version")
        );

        let empty = tmp.path().join("empty");
        ext(&empty, "version: v1alpha1\n");
        assert!(
            load_extension(&empty, (1, 11, 6))
                .unwrap_err()
                .reason
                .contains("empty metadata")
        );

        let no_rootfs = tmp.path().join("no-rootfs");
        fs::create_dir_all(&no_rootfs).unwrap();
        fs::write(no_rootfs.join("manifest.yaml"), GVISOR).unwrap();
        assert!(
            load_extension(&no_rootfs, (1, 11, 6))
                .unwrap_err()
                .reason
                .contains("rootfs")
        );

        let bad_range = tmp.path().join("bad-range");
        ext(&bad_range, &GVISOR.replace(">= v1.9.0", "~> 1.2"));
        assert!(
            load_extension(&bad_range, (1, 11, 6))
                .unwrap_err()
                .reason
                .contains("constraint")
        );
    }
}
