//! How an artifact is presented to a browser: its content type from the file name, and the
//! headers that keep anything a browser would execute (HTML, SVG, XML, JavaScript) inert unless
//! the operator chose otherwise.
//!
//! By default such artifacts are sent as `text/plain` attachments. Every artifact carries
//! `X-Content-Type-Options: nosniff` (no guessing HTML out of text) and a
//! `Content-Security-Policy` with `sandbox`, so even a document the browser renders runs in an
//! opaque origin without scripts. With `artifacts_serve_active` they are sent as their real type
//! and may run scripts — still sandboxed, so they cannot act as the signed-in user; serving them
//! from a separate origin (`artifacts_url`) is the recommended setup.

use tailrace_protocol::artifact_path::encode_component;

/// Policy of every artifact that is not an active document served as such.
pub const CSP_INERT: &str = "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox";
/// Policy of active documents when the operator lets them run: scripts, but in an opaque origin.
pub const CSP_ACTIVE: &str =
    "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:; sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

/// The presentation headers of one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    pub content_type: String,
    pub disposition: String,
    pub csp: &'static str,
}

/// `(content type, active, shown inline)` by lowercase extension.
fn by_extension(ext: &str) -> (&'static str, bool, bool) {
    match ext {
        "html" | "htm" | "shtml" | "xhtml" | "xht" | "mht" | "mhtml" => ("text/html; charset=utf-8", true, true),
        "svg" | "svgz" => ("image/svg+xml", true, true),
        "xml" | "xsl" | "xslt" | "rss" | "atom" => ("application/xml", true, true),
        "js" | "mjs" | "cjs" => ("text/javascript; charset=utf-8", true, true),
        "swf" => ("application/x-shockwave-flash", true, false),
        "txt" | "log" | "out" | "err" | "md" | "diff" | "patch" | "yaml" | "yml" | "toml" | "ini" => ("text/plain; charset=utf-8", false, true),
        "csv" => ("text/csv; charset=utf-8", false, true),
        "tsv" => ("text/tab-separated-values; charset=utf-8", false, true),
        "css" => ("text/css; charset=utf-8", false, true),
        "json" | "map" => ("application/json", false, true),
        "png" => ("image/png", false, true),
        "jpg" | "jpeg" => ("image/jpeg", false, true),
        "gif" => ("image/gif", false, true),
        "webp" => ("image/webp", false, true),
        "avif" => ("image/avif", false, true),
        "bmp" => ("image/bmp", false, true),
        "ico" => ("image/x-icon", false, true),
        "mp4" => ("video/mp4", false, true),
        "webm" => ("video/webm", false, true),
        "mp3" => ("audio/mpeg", false, true),
        "wav" => ("audio/wav", false, true),
        "ogg" => ("audio/ogg", false, true),
        "pdf" => ("application/pdf", false, false),
        "zip" | "jar" | "war" | "whl" | "apk" => ("application/zip", false, false),
        "gz" | "tgz" => ("application/gzip", false, false),
        "tar" => ("application/x-tar", false, false),
        "zst" => ("application/zstd", false, false),
        "xz" => ("application/x-xz", false, false),
        "bz2" => ("application/x-bzip2", false, false),
        "7z" => ("application/x-7z-compressed", false, false),
        "wasm" => ("application/wasm", false, false),
        _ => ("application/octet-stream", false, false),
    }
}

fn extension(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default()
}

/// The content type recorded for an artifact (its real type).
pub fn content_type(path: &str) -> &'static str {
    by_extension(&extension(path)).0
}

/// Whether a browser would execute the artifact if served as its real type.
pub fn is_active(path: &str) -> bool {
    by_extension(&extension(path)).1
}

/// Headers for serving `path`; `serve_active` is the operator's switch.
pub fn present(path: &str, serve_active: bool) -> Presentation {
    let (real, active, inline) = by_extension(&extension(path));
    let name = path.rsplit('/').next().unwrap_or(path);
    let filename = format!("filename*=UTF-8''{}", encode_component(name));
    match (active, serve_active) {
        (true, false) => Presentation {
            content_type: "text/plain; charset=utf-8".into(),
            disposition: format!("attachment; {filename}"),
            csp: CSP_INERT,
        },
        (true, true) => Presentation { content_type: real.into(), disposition: format!("inline; {filename}"), csp: CSP_ACTIVE },
        (false, _) => Presentation {
            content_type: real.into(),
            disposition: format!("{}; {filename}", if inline { "inline" } else { "attachment" }),
            csp: CSP_INERT,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_documents_are_inert_by_default() {
        for p in ["report/index.html", "x.HTM", "logo.svg", "feed.xml", "app.js", "a/b.xhtml"] {
            let d = present(p, false);
            assert_eq!(d.content_type, "text/plain; charset=utf-8", "{p}");
            assert!(d.disposition.starts_with("attachment;"), "{p}");
            assert!(d.csp.ends_with("sandbox"), "{p}");
            assert!(is_active(p));
        }
        let on = present("report/index.html", true);
        assert_eq!(on.content_type, "text/html; charset=utf-8");
        assert!(on.disposition.starts_with("inline;"));
        assert!(on.csp.contains("sandbox allow-scripts") && !on.csp.contains("allow-same-origin"));
    }

    #[test]
    fn other_types() {
        assert_eq!(present("shot.PNG", false).content_type, "image/png");
        assert!(present("shot.png", false).disposition.starts_with("inline;"));
        assert_eq!(present("build.log", true).content_type, "text/plain; charset=utf-8");
        assert!(present("app.bin", false).disposition.starts_with("attachment;"));
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(present("dir.v1/file", false).content_type, "application/octet-stream");
        assert_eq!(present("a/r é\".txt", false).disposition, "inline; filename*=UTF-8''r%20%C3%A9%22.txt");
    }
}
