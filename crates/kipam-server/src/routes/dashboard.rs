//! The dashboard at `/`: one self-contained HTML page (no CDN, no external assets, no
//! build step) for a wall screen. Its script reads `/v1/usage`, `/v1/overlaps`, `/v1/gc`
//! and each pool's forecast every few seconds and draws pools, their utilization and
//! risk, overlaps, pending reclaims and nodes.
//!
//! The page itself needs no token (it holds no data); the API calls it makes do, so it
//! asks for one when kipamd answers 401 and keeps it in the browser's session storage.
//! Because that token is worth protecting, the page is served with a Content Security
//! Policy that runs only its own inline script (pinned by hash) and lets it talk only to
//! the kipamd that served it: no injected script, no sending the token elsewhere.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use sha2::{Digest, Sha256};

const PAGE: &str = include_str!("dashboard.html");

/// The page's Content Security Policy, computed once from its inline script.
static CSP: LazyLock<String> = LazyLock::new(|| content_security_policy(PAGE));

/// The dashboard page.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_SECURITY_POLICY, CSP.as_str()),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(PAGE),
    )
}

/// A policy allowing exactly the inline scripts of `page` (by SHA-256), inline styles,
/// and requests to the page's own origin.
fn content_security_policy(page: &str) -> String {
    let hashes: Vec<String> = inline_scripts(page)
        .map(|s| format!("'sha256-{}'", base64(&Sha256::digest(s.as_bytes()))))
        .collect();
    format!(
        "default-src 'none'; script-src {}; style-src 'unsafe-inline'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hashes.join(" ")
    )
}

/// The text of every `<script>` element (the page's scripts carry no attributes).
fn inline_scripts(page: &str) -> impl Iterator<Item = &str> {
    page.split("<script>")
        .skip(1)
        .filter_map(|rest| rest.split_once("</script>").map(|(script, _)| script))
}

/// Standard base64 with padding (RFC 4648), as CSP hash sources are written.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn policy_pins_the_one_inline_script() {
        assert_eq!(inline_scripts(PAGE).count(), 1);
        let csp = content_security_policy(PAGE);
        assert_eq!(csp.matches("'sha256-").count(), 1, "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        // A script of "alert(1)": the hash every CSP tool gives for it.
        let csp = content_security_policy("<script>alert(1)</script>");
        assert!(
            csp.contains("'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"),
            "{csp}"
        );
    }

    #[test]
    fn page_loads_nothing_from_elsewhere() {
        for needle in ["src=", "<link", "@import", "url(", "http://", "https://"] {
            assert!(
                !PAGE.contains(needle),
                "the dashboard must be self-contained, found {needle:?}"
            );
        }
    }
}
