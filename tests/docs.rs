//! The repository's text stands on its own, and its markdown tables render:
//!
//! - no tracked text file points at files outside the repository (the research notes and design
//!   notes the project started from, or a developer's absolute paths): facts belong in `docs/`,
//!   upstream sources are cited by name;
//! - no markdown table is split by a blank line (the rows after it would render as a paragraph),
//!   and every table starts with a header and a delimiter row.
//!
//! Plain Rust, no dependencies. Files are those `git ls-files` lists; without git (a source
//! tarball) the tree is walked instead, skipping `target/` and hidden entries.

use std::path::{Path, PathBuf};
use std::process::Command;

/// References that must not appear. Built with `concat!` so this file does not contain them.
const FORBIDDEN: &[&str] = &[
    concat!("..", "/shared"),
    concat!("/wo", "rk/"),
    concat!("talos-", "formats"),
    concat!("image-factory", ".md"),
    concat!("DESIGN", ".md"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Repository-relative paths of the files to check.
fn files() -> Vec<PathBuf> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output();
    match out {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => o
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
            .collect(),
        _ => {
            let mut found = Vec::new();
            walk(&root(), Path::new(""), &mut found);
            found
        }
    }
}

fn walk(root: &Path, rel: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let path = rel.join(&name);
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if name_str.starts_with('.') && name_str != ".ci" && name_str != ".gitignore" {
            continue;
        }
        if kind.is_dir() {
            if name_str == "target" {
                continue;
            }
            walk(root, &path, found);
        } else if kind.is_file() {
            found.push(path);
        }
    }
}

/// The file's text, or `None` for binary files (NUL bytes or not UTF-8).
fn text(rel: &Path) -> Option<String> {
    let bytes = std::fs::read(root().join(rel)).ok()?;
    if bytes.contains(&0) {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// Whether `pattern` occurs in `line` as a reference of its own: a pattern starting with a
/// letter must not match inside a longer name (`docs/migrating-from-<pattern>`).
fn references(line: &str, pattern: &str) -> bool {
    line.match_indices(pattern).any(|(i, _)| {
        if !pattern.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return true;
        }
        !line[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

fn forbidden_references(rel: &Path, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for pattern in FORBIDDEN {
            if references(line, pattern) {
                found.push(format!(
                    "{}:{}: refers to {pattern:?}: {}",
                    rel.display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

fn is_row(line: &str) -> bool {
    line.trim_start().starts_with('|')
}

/// A delimiter row: `| --- | :---: |` and the like.
fn is_delimiter(line: &str) -> bool {
    let t = line.trim();
    t.starts_with('|')
        && t.contains('-')
        && t.chars().all(|c| matches!(c, '|' | '-' | ':' | ' ' | '\t'))
}

/// Tables split by a blank line, and table rows that do not start a table properly (a header
/// row followed by a delimiter row). Fenced code blocks are skipped.
fn table_problems(rel: &Path, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut fence: Option<&str> = None;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if let Some(marker) = fence {
            if t.starts_with(marker) {
                fence = None;
            }
            continue;
        }
        if t.starts_with("```") || t.starts_with("~~~") {
            fence = Some(&t[..3]);
            continue;
        }
        let at = |n: usize| format!("{}:{}", rel.display(), n + 1);
        if line.trim().is_empty() {
            // Blank lines (one or more) between two table rows.
            let next = lines[i + 1..].iter().position(|l| !l.trim().is_empty());
            let before = i > 0 && is_row(lines[i - 1]);
            if before && next.is_some_and(|k| is_row(lines[i + 1 + k])) {
                found.push(format!("{}: a blank line splits a table", at(i)));
            }
            continue;
        }
        if is_row(line) && (i == 0 || !is_row(lines[i - 1])) {
            let delimited = lines.get(i + 1).is_some_and(|l| is_delimiter(l));
            if !delimited {
                found.push(format!(
                    "{}: table row without a header and delimiter row: {}",
                    at(i),
                    line.trim()
                ));
            }
        }
    }
    found
}

#[test]
fn no_references_to_files_outside_the_repository() {
    let mut found = Vec::new();
    let mut checked = 0;
    for rel in files() {
        if let Some(text) = text(&rel) {
            checked += 1;
            found.extend(forbidden_references(&rel, &text));
        }
    }
    assert!(checked > 100, "only {checked} text files found");
    assert!(
        found.is_empty(),
        "cite docs/ or an upstream source by name instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn markdown_tables_are_not_split() {
    let mut found = Vec::new();
    let mut checked = 0;
    for rel in files() {
        if rel.extension().is_none_or(|e| e != "md") {
            continue;
        }
        if let Some(text) = text(&rel) {
            checked += 1;
            found.extend(table_problems(&rel, &text));
        }
    }
    for must in ["README.md", "ARCHITECTURE.md", "docs/formats.md"] {
        assert!(
            files().iter().any(|f| f == Path::new(must)),
            "{must} not found"
        );
    }
    assert!(checked >= 3, "only {checked} markdown files found");
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_checks_find_what_they_look_for() {
    let p = Path::new("x.md");
    let bad = format!("see {}", FORBIDDEN[3]);
    assert_eq!(forbidden_references(p, &bad).len(), 1);
    let ok = format!("see docs/migrating-from-{}", FORBIDDEN[3]);
    assert!(forbidden_references(p, &ok).is_empty(), "{ok}");
    assert_eq!(
        forbidden_references(p, &format!("x {}y", FORBIDDEN[0])).len(),
        1
    );

    let split = "| a | b |\n| --- | --- |\n| 1 | 2 |\n\n| 3 | 4 |\n";
    assert_eq!(
        table_problems(p, split).len(),
        2,
        "{:?}",
        table_problems(p, split)
    );
    let whole = "| a | b |\n| --- | --- |\n| 1 | 2 |\n| 3 | 4 |\n\ntext\n";
    assert!(table_problems(p, whole).is_empty());
    let fenced = "```\n| a |\n\n| b |\n```\n";
    assert!(table_problems(p, fenced).is_empty());
}
