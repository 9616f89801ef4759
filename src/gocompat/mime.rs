//! Go's `mime.TypeByExtension` with only its built-in table (`mime/type.go`,
//! `builtinTypesLower`): what a Go server answers when the host has no `mime.types` file, as in
//! the Image Factory's container image. Upstream's talosctl downloads take their
//! `Content-Type` from it.

/// Go's built-in extension table (lower case, with the leading dot).
const BUILTIN: &[(&str, &str)] = &[
    (".avif", "image/avif"),
    (".css", "text/css; charset=utf-8"),
    (".gif", "image/gif"),
    (".htm", "text/html; charset=utf-8"),
    (".html", "text/html; charset=utf-8"),
    (".jpeg", "image/jpeg"),
    (".jpg", "image/jpeg"),
    (".js", "text/javascript; charset=utf-8"),
    (".json", "application/json"),
    (".mjs", "text/javascript; charset=utf-8"),
    (".pdf", "application/pdf"),
    (".png", "image/png"),
    (".svg", "image/svg+xml"),
    (".wasm", "application/wasm"),
    (".webp", "image/webp"),
    (".xml", "text/xml; charset=utf-8"),
];

/// `filepath.Ext(name)`: the suffix from the last `.` of the last path element, or `""`.
pub fn ext(name: &str) -> &str {
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    match name[base_start..].rfind('.') {
        Some(i) => &name[base_start + i..],
        None => "",
    }
}

/// `mime.TypeByExtension(ext)` over the built-in table (matching is case-insensitive, as
/// Go's); `None` where Go returns `""` (`.exe` among them).
pub fn type_by_extension(ext: &str) -> Option<&'static str> {
    BUILTIN
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_go_without_mime_types_files() {
        assert_eq!(type_by_extension(".json"), Some("application/json"));
        assert_eq!(type_by_extension(".HTML"), Some("text/html; charset=utf-8"));
        assert_eq!(type_by_extension(".exe"), None);
        assert_eq!(type_by_extension(""), None);
        assert_eq!(type_by_extension("json"), None);
        assert_eq!(ext("talosctl-windows-amd64.exe"), ".exe");
        assert_eq!(ext("talosctl-linux-amd64"), "");
        assert_eq!(ext("a.b/c"), "");
        assert_eq!(ext("x."), ".");
    }
}
