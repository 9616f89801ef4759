//! The two YAML documents this module writes, extension `manifest.yaml` and
//! `extensions.yaml`, as Go `gopkg.in/yaml.v3` writes them (4-space indent, sequences indented
//! under their key, list-of-map continuation lines at dash column + 2, go-yaml's scalar styles),
//! through the crate's yaml.v3-compatible emitter (`crate::gocompat::yaml::emit`).

use crate::gocompat::yaml::emit::{Out, emit_document};

/// A node of the documents we emit: string scalars, mappings with fixed keys, sequences.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A string scalar (styled as go-yaml styles a Go `string`).
    Str(String),
    /// A block mapping with keys in the given order.
    Map(Vec<(&'static str, Node)>),
    /// A block sequence (`[]` when empty).
    Seq(Vec<Node>),
}

impl Node {
    pub(crate) fn str(s: impl Into<String>) -> Node {
        Node::Str(s.into())
    }

    fn to_out(&self) -> Out {
        match self {
            Node::Str(s) => Out::string(s),
            Node::Map(entries) => Out::Map(
                entries
                    .iter()
                    .map(|(k, v)| (Out::string(k), v.to_out()))
                    .collect(),
            ),
            Node::Seq(items) => Out::Seq(items.iter().map(Node::to_out).collect()),
        }
    }
}

/// Emits a document whose root is a mapping.
pub(crate) fn document(root: &[(&'static str, Node)]) -> String {
    emit_document(&Node::Map(root.to_vec()).to_out())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(value: &str) -> String {
        document(&[("k", Node::str(value))])
    }

    #[test]
    fn scalar_styles_follow_go_yaml() {
        assert_eq!(doc("foo"), "k: foo\n");
        assert_eq!(doc(""), "k: \"\"\n");
        assert_eq!(doc("true"), "k: \"true\"\n");
        assert_eq!(doc("1.0"), "k: \"1.0\"\n");
        assert_eq!(doc("20250505.0"), "k: \"20250505.0\"\n");
        assert_eq!(doc(">= 1.0.0"), "k: '>= 1.0.0'\n");
        assert_eq!(doc("x\n"), "k: |\n    x\n");
        assert_eq!(doc("x\ny"), "k: |-\n    x\n    y\n");
    }

    #[test]
    fn layers_layout_matches_go_yaml() {
        let layer = Node::Map(vec![
            ("image", Node::str("0.sqsh")),
            (
                "metadata",
                Node::Map(vec![
                    ("name", Node::str("gvisor")),
                    ("description", Node::str("line one\nline two\n")),
                    (
                        "compatibility",
                        Node::Map(vec![(
                            "talos",
                            Node::Map(vec![("version", Node::str(">= v1.9.0"))]),
                        )]),
                    ),
                ]),
            ),
        ]);
        let text = document(&[("layers", Node::Seq(vec![layer]))]);
        assert_eq!(
            text,
            "layers:\n    - image: 0.sqsh\n      metadata:\n        name: gvisor\n        \
             description: |\n            line one\n            line two\n        \
             compatibility:\n            talos:\n                version: '>= v1.9.0'\n"
        );
        assert_eq!(document(&[("layers", Node::Seq(vec![]))]), "layers: []\n");
    }
}
