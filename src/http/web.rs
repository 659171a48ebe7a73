//! The softphone's static files: embedded in the binary at compile time (`build.rs` builds
//! web/ and generates the table included below), or read from a directory given with
//! `switchboard serve --web-root DIR` for front-end development.
//!
//! Every response carries a Content-Security-Policy. Hashed names under `/assets/` are cached
//! for a year (`immutable`); everything else is revalidated (`no-cache` with an ETag). Paths
//! are checked before any lookup: `..`, `.`, empty segments, backslashes, NUL and encoded
//! slashes are refused with 400, in plain and percent-encoded forms alike.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// URL path, e.g. `/index.html`, `/assets/app-3F2K9Q1A.js`.
    pub path: &'static str,
    /// Strong ETag (quoted), a hash of `body`.
    pub etag: &'static str,
    /// The file.
    pub body: &'static [u8],
    /// The file gzip-compressed at build time, for the larger ones.
    pub gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The policy for the page: scripts and styles only from this server; the SIP WebSocket
/// may be another host (the login form's advanced field), hence `wss:`/`ws:`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self' wss: ws:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Why `--web-root` was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebRootError {
    /// The directory cannot be used.
    #[error("--web-root {path}: {reason}")]
    Unusable {
        /// The directory given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Set twice in one process.
    #[error("--web-root is already set")]
    AlreadySet,
}

static WEB_ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Serves the front end from `dir` instead of the embedded copy (for the whole process).
/// `dir` must be a directory with an `index.html`, e.g. `web/dist` after `npm run build`.
pub fn set_web_root(dir: &Path) -> Result<(), WebRootError> {
    let unusable = |reason: String| WebRootError::Unusable {
        path: dir.to_path_buf(),
        reason,
    };
    let canonical = dir.canonicalize().map_err(|e| unusable(e.to_string()))?;
    if !canonical.join("index.html").is_file() {
        return Err(unusable(
            "no index.html in it (build the front end first: cd web && npm run build)".into(),
        ));
    }
    WEB_ROOT
        .set(canonical)
        .map_err(|_| WebRootError::AlreadySet)
}

/// The directory set with [`set_web_root`], if any.
pub fn web_root() -> Option<&'static Path> {
    WEB_ROOT.get().map(PathBuf::as_path)
}

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    /// Not valid percent-encoding or not UTF-8.
    #[error("malformed path")]
    Malformed,
    /// `..` or `.` segments, empty segments, backslashes, encoded slashes, control bytes.
    #[error("path not allowed")]
    Traversal,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(segment: &str) -> Result<String, BadPath> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(BadPath::Malformed),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| BadPath::Malformed)
}

/// The file a request path names, as `/a/b.js` (decoded), or why it is refused.
/// `/` is `/index.html`.
pub fn clean_path(raw: &str) -> Result<String, BadPath> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(BadPath::Traversal);
    };
    if rest.is_empty() {
        return Ok("/index.html".to_string());
    }
    let mut clean = String::with_capacity(raw.len());
    for segment in rest.split('/') {
        let decoded = percent_decode(segment)?;
        let bad = decoded.is_empty()
            || decoded == "."
            || decoded == ".."
            || decoded
                .chars()
                .any(|c| c == '/' || c == '\\' || c == ':' || c.is_control());
        if bad {
            return Err(BadPath::Traversal);
        }
        clean.push('/');
        clean.push_str(&decoded);
    }
    Ok(clean)
}

/// The Content-Type for a file name.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "wav" => "audio/wav",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Whether the file name carries a content hash (esbuild's `name-HASH.ext` under `/assets/`),
/// so that it may be cached forever.
fn is_hashed(path: &str) -> bool {
    path.starts_with("/assets/")
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// Headers every response of the public listener's static side carries.
pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("microphone=(self), camera=(), geolocation=()"),
    );
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = (status, text).into_response();
    security_headers(response.headers_mut());
    response
}

/// Serves one static file for GET or HEAD (the handler of the public router's fallback).
pub async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let path = match clean_path(uri.path()) {
        Ok(path) => path,
        Err(e) => {
            tracing::debug!(path = uri.path(), error = %e, "static path refused");
            return plain(StatusCode::BAD_REQUEST, "bad path\n");
        }
    };
    let mut response = match web_root() {
        Some(root) => from_dir(root, &path).await,
        None => embedded(&path, &headers),
    };
    if method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    security_headers(response.headers_mut());
    response
}

fn embedded(path: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let cache = if is_hashed(path) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match asset.gzip {
            Some(gz) if accepts_gzip(headers) => {
                let mut r = Body::from(gz).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            _ => Body::from(asset.body).into_response(),
        }
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    if asset.gzip.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    response
}

/// Development: the file under `root` (already canonical), never outside it, never cached.
async fn from_dir(root: &Path, path: &str) -> Response {
    let file = root.join(path.trim_start_matches('/'));
    // clean_path already refused `..`; a symlink pointing out of the root is refused too.
    let resolved = match tokio::fs::canonicalize(&file).await {
        Ok(resolved) if resolved.starts_with(root) => resolved,
        _ => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    match tokio::fs::read(&resolved).await {
        Ok(body) => {
            let mut response = Body::from(body).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(path)),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(_) => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("/").as_deref(), Ok("/index.html"));
        assert_eq!(clean_path("/index.html").as_deref(), Ok("/index.html"));
        assert_eq!(
            clean_path("/assets/app-ABC123.js").as_deref(),
            Ok("/assets/app-ABC123.js")
        );
        assert_eq!(clean_path("/a%20b.txt").as_deref(), Ok("/a b.txt"));
    }

    #[test]
    fn traversal_is_refused_in_every_spelling() {
        for bad in [
            "/../Cargo.toml",
            "/assets/../../etc/passwd",
            "/./index.html",
            "/%2e%2e/Cargo.toml",
            "/%2E%2E/Cargo.toml",
            "/.%2e/x",
            "/assets/%2e%2e%2f%2e%2e%2fCargo.toml",
            "/assets%2f..%2f..%2fCargo.toml",
            "/..%5cCargo.toml",
            "/assets\\..\\x",
            "//etc/passwd",
            "/assets//x",
            "/a%00b",
            "/C:/x",
            "relative",
            "",
        ] {
            assert!(clean_path(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(clean_path("/%zz"), Err(BadPath::Malformed));
        assert_eq!(clean_path("/%c3%28"), Err(BadPath::Malformed));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("/index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("/assets/app-X.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("/favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("/x"), "application/octet-stream");
    }

    #[test]
    fn the_built_page_is_embedded_and_references_hashed_assets() {
        let index = ASSETS
            .iter()
            .find(|a| a.path == "/index.html")
            .expect("index.html embedded");
        let html = std::str::from_utf8(index.body).expect("utf-8");
        assert!(
            !html.contains("{{"),
            "template placeholders left in index.html"
        );
        for asset in ASSETS.iter().filter(|a| is_hashed(a.path)) {
            assert!(html.contains(asset.path), "{} not referenced", asset.path);
        }
        assert!(
            ASSETS
                .iter()
                .any(|a| a.path.ends_with(".js") && a.gzip.is_some())
        );
    }

    #[test]
    fn gzip_negotiation() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
