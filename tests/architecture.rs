//! Checks the invariants `ARCHITECTURE.md` lists under "Invariants": the layering of the
//! crate's top-level modules, what `http` may do, and where test support lives. Plain Rust over
//! the source text (no dependencies), so it runs with every `cargo test`.
//!
//! How module dependencies are found: every `crate::<module>` path (also inside
//! `use crate::{a, b::c}` groups) and every `super::` chain that climbs to the crate root, in
//! code with comments removed. A file's top-level module is its first path component under
//! `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import only modules of a strictly lower layer, so
/// the graph has no cycles and a layer never reaches up. Keep in sync with ARCHITECTURE.md.
const LAYERS: &[(&str, &[&str])] = &[
    ("error chains", &["errors"]),
    (
        "leaves",
        &[
            "atomic_file",
            "contained",
            "file_response",
            "formats",
            "gocompat",
            "ipxe",
            "limits",
            "mac",
            "metrics",
            "ratelimit",
            "systemd",
        ],
    ),
    // The store hashes sparse files through `formats::sparse`.
    ("storage", &["store"]),
    ("version", &["version"]),
    (
        "formats and protocols",
        &["dhcp", "oci", "schematic", "tftp"],
    ),
    ("configuration", &["config"]),
    ("configured plumbing", &["logging", "tls", "upstream"]),
    ("factory", &["factory"]),
    ("services on the factory", &["assign", "doctor", "registry"]),
    // Retention attributes store content to Talos versions and reads assignments.
    ("store maintenance", &["retention"]),
    ("network boot", &["netboot"]),
    // The web UI's logic: wizard, sessions, embedded assets; rendered by `http::ui`.
    ("web UI", &["ui"]),
    ("http", &["http"]),
    ("server", &["server"]),
    ("cli", &["cli"]),
    ("test support", &["fixture", "fuzzing"]),
];

/// Modules only tests, benches and fuzzing may use; the library itself never imports them.
const TEST_SUPPORT: &[(&str, &str)] = &[("fixture", "testkit"), ("fuzzing", "fuzzing")];

/// Test support inside library modules: (the file under `src/` that declares it, the module,
/// the `#[cfg]` every declaration must carry). Without the feature the release build does not
/// compile the file.
const GATED_SUBMODULES: &[(&str, &str, &str)] = &[
    ("dhcp/mod.rs", "testkit", r#"#[cfg(feature = "testkit")]"#),
    ("oci/mod.rs", "layout", r#"#[cfg(feature = "testkit")]"#),
    (
        "factory/initramfs/mod.rs",
        "parse",
        r#"#[cfg(any(feature = "testkit", feature = "fuzzing"))]"#,
    ),
];

/// What handlers must not do themselves (the owning service module does it).
const HTTP_FORBIDDEN: &[&str] = &[
    "std::fs",
    "tokio::fs",
    "sha2::",
    "std::process",
    "tokio::process",
    "serde_yaml::",
    "sled::",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source with comments (line, doc and nested block comments) removed and the contents
/// of string and char literals blanked, so that neither a comment nor a string (`"*/*"`,
/// `"crate::x"`) is mistaken for code. Line breaks are kept.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, ch)| c.get(i + k) == Some(&ch))
    };
    while i < c.len() {
        if at(i, "//") {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0;
            while i < c.len() {
                if at(i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (at(i + 1, "\"") || at(i + 1, "#"))
            && !c[..i].last().is_some_and(|&p| is_ident_char(p))
        {
            // Raw string r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            i = j + 1;
            while i < c.len() && !at(i, &close) {
                if c[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += close.chars().count();
            out.push_str("\"\"");
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                if c.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\''
            && (at(i + 2, "'")
                || (c.get(i + 1) == Some(&'\\') && c[i + 2..].iter().take(10).any(|&x| x == '\'')))
        {
            // A char literal ('"', '\'', '\u{..}'); a lifetime has no closing quote.
            i += 1;
            if c[i] == '\\' {
                i += 1;
            }
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The module path of a file under `src/` (`["factory", "initramfs", "squash"]`);
/// `mod.rs` and `lib.rs` name their directory.
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The crate-level modules a piece of code names.
fn crate_modules(code: &str, depth: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut prefixes = vec!["crate::".to_string()];
    if depth > 0 {
        prefixes.push("super::".repeat(depth));
    }
    for prefix in &prefixes {
        let mut rest = code;
        while let Some(i) = rest.find(prefix.as_str()) {
            let before = rest[..i].chars().next_back();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| is_ident_char(c) || c == ':') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = matching_brace(group);
                for item in split_top_level(&group[..end]) {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|&c| is_ident_char(c))
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                }
            } else {
                let name: String = rest.chars().take_while(|&c| is_ident_char(c)).collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found.remove("self");
    found.remove("super");
    found
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 1;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    s.len()
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// `module -> (modules it imports -> one file that does)`.
fn dependency_graph() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for file in files {
        let path = module_path(&file);
        let Some(top) = path.first().cloned() else {
            continue; // lib.rs, main.rs
        };
        if top == "bin" {
            continue; // separate binaries, not part of the library's layering
        }
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for dep in crate_modules(&code, path.len()) {
            if dep != top {
                graph
                    .entry(top.clone())
                    .or_default()
                    .entry(dep)
                    .or_insert_with(|| file.clone());
            }
        }
    }
    graph
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

#[test]
fn every_top_level_module_has_a_layer() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(src()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let module = name.trim_end_matches(".rs");
        if ["lib", "main", "bin"].contains(&module) {
            continue;
        }
        if layer_of(module).is_none() {
            missing.push(module.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "modules with no layer in tests/architecture.rs (and ARCHITECTURE.md, Invariants): {missing:?}"
    );
}

#[test]
fn modules_import_only_lower_layers() {
    let mut violations = Vec::new();
    for (module, deps) in dependency_graph() {
        let Some(own) = layer_of(&module) else {
            continue; // reported by every_top_level_module_has_a_layer
        };
        for (dep, file) in deps {
            match layer_of(&dep) {
                // Items of the crate root (`crate::init_crypto`).
                None => {}
                Some(layer) if layer < own => {}
                Some(layer) => violations.push(format!(
                    "{module} ({}) imports {dep} ({}) in {}",
                    LAYERS[own].0,
                    LAYERS[layer].0,
                    file.strip_prefix(src()).unwrap().display()
                )),
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering broken (a module may import only lower layers; ARCHITECTURE.md, Invariants):\n{}",
        violations.join("\n")
    );
}

#[test]
fn test_support_is_feature_gated_and_unused_by_the_library() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    for (module, feature) in TEST_SUPPORT {
        let gated = format!("#[cfg(feature = \"{feature}\")]\npub mod {module};");
        assert!(
            lib.contains(&gated),
            "src/lib.rs must declare `{module}` only with feature `{feature}`"
        );
    }
    for (module, deps) in dependency_graph() {
        if TEST_SUPPORT.iter().any(|(m, _)| *m == module) {
            continue;
        }
        for (m, _) in TEST_SUPPORT {
            assert!(
                !deps.contains_key(*m),
                "{module} imports test support `{m}` ({})",
                deps[*m].display()
            );
        }
    }
}

#[test]
fn test_support_submodules_are_declared_only_under_their_feature() {
    for (file, module, cfg) in GATED_SUBMODULES {
        let text = std::fs::read_to_string(src().join(file)).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let declarations: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                let decl = l
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub ");
                decl == format!("mod {module};") || decl.starts_with(&format!("mod {module} "))
            })
            .map(|(i, _)| i)
            .collect();
        assert!(
            !declarations.is_empty(),
            "src/{file} no longer declares `{module}`: update GATED_SUBMODULES"
        );
        for i in declarations {
            assert!(
                i > 0 && lines[i - 1] == *cfg,
                "src/{file}:{}: `{module}` is test support and must be declared under `{cfg}` \
                 (ARCHITECTURE.md, Invariants)",
                i + 1
            );
        }
    }
}

#[test]
fn http_holds_routing_extraction_and_response_mapping_only() {
    let mut files = Vec::new();
    rust_files(&src().join("http"), &mut files);
    let mut found = Vec::new();
    for file in files {
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for needle in HTTP_FORBIDDEN {
            let used = code.match_indices(needle).any(|(i, _)| {
                !code[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| is_ident_char(c) || c == ':')
            });
            if used {
                found.push(format!(
                    "{} uses {needle}",
                    file.strip_prefix(src()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "http handlers do file, process, hashing or database work themselves; move it to the \
         service module that owns it (ARCHITECTURE.md, Invariants):\n{}",
        found.join("\n")
    );
}

/// The `#[error(...)]` attributes of `text` that show a source's message while exposing it as
/// the source too (`{0}` on a `#[from]`/`#[source]` tuple field, or `{source}`), so a chain
/// printer (anyhow's `{:#}`, `errors::chain`) would print that cause twice.
fn errors_showing_their_source(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = i;
        if !lines[i].trim_start().starts_with("#[error(") {
            i += 1;
            continue;
        }
        let mut attr = lines[i].trim().to_string();
        while !attr.ends_with(")]") && i + 1 < lines.len() {
            i += 1;
            attr.push_str(lines[i].trim());
        }
        i += 1;
        // The variant (or field) the attribute is on.
        let item = lines[i..]
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.starts_with("#[") && !l.starts_with("//"))
            .unwrap_or("");
        let shows_field0 = attr.contains("{0}") || attr.contains("{0:");
        let field0_is_source = item.contains("(#[from]") || item.contains("(#[source]");
        if (shows_field0 && field0_is_source) || attr.contains("{source}") {
            found.push(format!("line {}: {attr} {item}", start + 1));
        }
    }
    found
}

/// Errors keep their sources and show each once: a layer either forwards its source
/// (`#[error(transparent)]`) or shows its own context and exposes the source, never both.
#[test]
fn errors_do_not_show_a_source_they_expose() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut found = Vec::new();
    for file in files {
        for hit in errors_showing_their_source(&std::fs::read_to_string(&file).unwrap()) {
            found.push(format!(
                "{}: {hit}",
                file.strip_prefix(src()).unwrap().display()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "an error shows its source's message and exposes it as source() too, so logs and the \
         CLI print the cause twice; use #[error(transparent)] or a context-only message \
         (ARCHITECTURE.md, Invariants; src/errors.rs):\n{}",
        found.join("\n")
    );
    // The checker sees both forms.
    let bad = "#[error(\"{0}\")]\n    Store(#[from] StoreError),\n\
               #[error(\"cannot read {path}: {source}\")]\n    Read { path: PathBuf, source: io::Error },\n\
               #[error(transparent)]\n    Io(#[from] io::Error),\n\
               #[error(\"{source_name}: {0}\")]\n    Other(String),\n";
    assert_eq!(errors_showing_their_source(bad).len(), 2, "{bad}");
}

/// Failures answered over HTTP are logged once, by the trace layer, with the request ID: the
/// error mappings put the cause chain on the response and do not log themselves.
#[test]
fn http_error_mappings_do_not_log() {
    let mut found = Vec::new();
    for rel in ["http/error.rs", "http/factory.rs", "registry/errors.rs"] {
        let code = code_only(&std::fs::read_to_string(src().join(rel)).unwrap());
        for level in ["error!", "warn!"] {
            if code.contains(level) {
                found.push(format!("{rel} logs with {level}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the one log line of a failed request is written by the trace layer (src/http/mod.rs, \
         log_response) from errors::LoggedCause; a second line from the mapping duplicates \
         it:\n{}",
        found.join("\n")
    );
}

/// The checker itself: it must see the imports it claims to see.
#[test]
fn the_import_scanner_finds_paths_groups_and_super_chains() {
    let code = code_only(
        "use crate::{store::Store, oci::{a, b}, version};\n\
         // use crate::commented_out;\n\
         let accept = \"*/*\"; let q = '\"'; let s = \"crate::in_a_string\";\n\
         /* use crate::in_a_block; /* nested */ crate::still_comment */\n\
         let r = r#\"crate::raw\"#; fn f<'a>(x: &'a str) {}\n\
         let x = crate::limits::fd();\n\
         use super::super::config::Config;\n\
         fn f() -> mycrate::other {}\n",
    );
    let deps = crate_modules(&code, 2);
    let want: BTreeSet<String> = ["store", "oci", "version", "limits", "config"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(deps, want);
    // One `super::` from a nested file stays inside its own top-level module.
    assert!(crate_modules("use super::config;", 2).is_empty());
}

/// What the web UI's templates may not contain, and why (ARCHITECTURE.md, Invariants: the
/// pages' Content-Security-Policy allows script and style only from `web/static/`, and
/// askama escapes everything unless told not to).
const TEMPLATE_FORBIDDEN: &[(&str, &str)] = &[
    (
        "<script>",
        "inline script (CSP: script-src 'self'); load a web/static/*.js file",
    ),
    (
        "<style",
        "inline style (CSP: style-src 'self'); use web/static/app.css",
    ),
    (
        " style=\"",
        "a style attribute (CSP); use a class from web/static/app.css",
    ),
    ("javascript:", "a javascript: URL (CSP)"),
    (
        " onclick=",
        "an inline event handler (CSP); use web/static/*.js",
    ),
    (
        " onsubmit=",
        "an inline event handler (CSP); use web/static/*.js",
    ),
    (
        " onchange=",
        "an inline event handler (CSP); use web/static/*.js",
    ),
    (
        " oninput=",
        "an inline event handler (CSP); use web/static/*.js",
    ),
    ("|safe", "unescaped output: everything on a page is escaped"),
    (
        "src=\"http",
        "an external resource: nothing is loaded from elsewhere (air-gapped sites)",
    ),
    (
        "href=\"//",
        "a protocol-relative link: pages link with chrome.base",
    ),
];

/// Templates whose POST forms go to public routes, where there is no session to protect.
const PUBLIC_POST_TEMPLATES: &[&str] = &["wizard.html"];

#[test]
fn templates_keep_to_the_content_security_policy_and_escape_everything() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/templates");
    let mut found = Vec::new();
    let mut forms_without_csrf = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for (needle, why) in TEMPLATE_FORBIDDEN {
            if text.contains(needle) {
                found.push(format!("web/templates/{name}: {why} ({needle:?})"));
            }
        }
        // Every POST form of an admin page carries the session's CSRF token (the login form
        // carries its own: `form_csrf`).
        for form in text.split("<form").skip(1) {
            let form = form.split("</form>").next().unwrap_or("");
            let post = form
                .split('>')
                .next()
                .is_some_and(|tag| tag.contains("method=\"post\""));
            // A multipart upload carries it in its action's query (`?csrf=`); the public
            // wizard's form needs none (it stores a schematic, as `POST /schematics` does
            // for anyone, and no session is involved).
            let carries =
                form.contains("name=\"csrf\"") || form.contains("?csrf={{ chrome.csrf() }}");
            if post && !carries && !PUBLIC_POST_TEMPLATES.contains(&name.as_str()) {
                forms_without_csrf.push(format!("web/templates/{name}"));
            }
        }
    }
    // Static files load nothing from elsewhere either (no fonts, CDNs or trackers).
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("web/static")).unwrap()
    {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).to_string();
        if text.contains("://") || text.contains("@import") {
            found.push(format!(
                "{}: names another site (air-gapped sites)",
                path.display()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "templates break the UI's rules (ARCHITECTURE.md, Invariants):\n{}",
        found.join("\n")
    );
    assert!(
        forms_without_csrf.is_empty(),
        "POST forms without a csrf field (ARCHITECTURE.md, Invariants): {forms_without_csrf:?}"
    );
}
