//! Cross-site request forgery protection for cookie sessions, by Fetch metadata (the rule of Go
//! 1.25's `net/http.CrossOriginProtection`), so no CSRF token is needed and non-browser clients
//! (curl with a cookie jar, CTFd tools with `Authorization: Token`) keep working unchanged:
//!
//! 1. `GET`, `HEAD` and `OPTIONS` pass (they change nothing).
//! 2. A request with an `Authorization` header passes: the caller is then authenticated by the
//!    token alone (the cookie is not read), and a cross-site page cannot add that header without
//!    a CORS preflight, which this service never grants.
//! 3. `Sec-Fetch-Site: same-origin` or `none` (typed in, bookmarks) passes; any other value
//!    (`same-site`, `cross-site`) is refused: a sibling subdomain is not trusted either.
//! 4. Without `Sec-Fetch-Site` (older browsers), an `Origin` whose host and port differ from
//!    `Host` is refused (`Origin: null` too).
//! 5. Neither header: not a browser (browsers send at least `Origin` on cross-site unsafe
//!    requests), passes.
//!
//! The rule applies to every unsafe request, not only those carrying the session cookie, so a
//! forged login (signing the victim in as the attacker) is refused as well.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Why a request was refused (the message of the 403).
pub const REFUSED: &str = "Cross-site request refused: send it from this site's own pages, or \
                           authenticate with `Authorization: Token <API token>`.";

/// The verdict on one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A safe method: nothing to check.
    Safe,
    /// Authenticated by a token, never by the cookie.
    Token,
    /// The browser says it comes from this origin (or from the user directly).
    SameOrigin,
    /// No Fetch metadata and no `Origin`: not a browser.
    NotBrowser,
    /// A browser request from another origin.
    CrossOrigin,
}

impl Verdict {
    /// Does the request go on?
    pub fn allowed(self) -> bool {
        self != Self::CrossOrigin
    }
}

/// The decision (pure): see the module docs.
pub fn check(method: &Method, headers: &HeaderMap) -> Verdict {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Verdict::Safe;
    }
    if headers.contains_key(header::AUTHORIZATION) {
        return Verdict::Token;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => Verdict::SameOrigin,
            _ => Verdict::CrossOrigin,
        };
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Verdict::NotBrowser;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    match origin.to_str().ok().and_then(origin_authority) {
        Some((authority, default_port)) if same_authority(&authority, host, default_port) => {
            Verdict::SameOrigin
        }
        _ => Verdict::CrossOrigin,
    }
}

/// `scheme://host[:port]` to (`host[:port]` lower-cased, the scheme's default port); `None` for
/// `null`, other schemes and anything with a path or credentials.
fn origin_authority(origin: &str) -> Option<(String, &'static str)> {
    let (scheme, rest) = origin.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '@', '?', '#']) {
        return None;
    }
    Some((rest.to_ascii_lowercase(), default_port))
}

/// `host[:port]` against the `Host` header, with the scheme's default port made explicit on
/// both sides (`http://example.org` is `example.org:80`).
fn same_authority(origin: &str, host: &str, default_port: &str) -> bool {
    let explicit = |authority: &str| -> String {
        let authority = authority.trim().to_ascii_lowercase();
        // An IPv6 literal (`[::1]`) has colons of its own: its port follows the `]`.
        let has_port = if authority.starts_with('[') {
            authority.contains("]:")
        } else {
            authority.contains(':')
        };
        if has_port {
            authority
        } else {
            format!("{authority}:{default_port}")
        }
    };
    !host.is_empty() && explicit(origin) == explicit(host)
}

/// The middleware: a 403 (`forbidden`, the one error shape) for [`Verdict::CrossOrigin`].
pub async fn protect(request: Request, next: Next) -> Response {
    let verdict = check(request.method(), request.headers());
    if verdict.allowed() {
        next.run(request).await
    } else {
        tracing::debug!(method = %request.method(), uri = %request.uri(), "cross-site request refused");
        ApiError::forbidden(REFUSED).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn verdict(method: Method, pairs: &[(&'static str, &'static str)]) -> Verdict {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        check(&method, &headers)
    }

    #[test]
    fn safe_methods_and_token_clients_always_pass() {
        let cross = [("sec-fetch-site", "cross-site"), ("host", "a:1")];
        assert_eq!(verdict(Method::GET, &cross), Verdict::Safe);
        assert_eq!(verdict(Method::HEAD, &cross), Verdict::Safe);
        assert_eq!(verdict(Method::OPTIONS, &cross), Verdict::Safe);
        let token = [
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
            ("authorization", "Token fctf_x"),
        ];
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(verdict(method, &token), Verdict::Token);
        }
    }

    #[test]
    fn fetch_metadata_decides_when_present() {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(verdict(method.clone(), &[("sec-fetch-site", "same-origin")]).allowed());
            assert!(verdict(method.clone(), &[("sec-fetch-site", "none")]).allowed());
            assert!(!verdict(method.clone(), &[("sec-fetch-site", "same-site")]).allowed());
            assert!(!verdict(method.clone(), &[("sec-fetch-site", "cross-site")]).allowed());
            assert!(!verdict(method, &[("sec-fetch-site", "garbage")]).allowed());
        }
        // Fetch metadata wins over a matching Origin.
        let pairs = [
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://ctf.example"),
            ("host", "ctf.example"),
        ];
        assert_eq!(verdict(Method::POST, &pairs), Verdict::CrossOrigin);
    }

    #[test]
    fn without_fetch_metadata_origin_must_match_host() {
        let post = |origin: &'static str, host: &'static str| {
            verdict(Method::POST, &[("origin", origin), ("host", host)])
        };
        assert_eq!(
            post("http://ctf.example", "ctf.example"),
            Verdict::SameOrigin
        );
        assert_eq!(
            post("http://CTF.example:80", "ctf.example"),
            Verdict::SameOrigin
        );
        assert_eq!(
            post("https://ctf.example", "ctf.example:443"),
            Verdict::SameOrigin
        );
        assert_eq!(
            post("http://127.0.0.1:8000", "127.0.0.1:8000"),
            Verdict::SameOrigin
        );
        assert_eq!(post("http://[::1]:8000", "[::1]:8000"), Verdict::SameOrigin);
        assert_eq!(post("http://[::1]", "[::1]:80"), Verdict::SameOrigin);
        assert_eq!(
            post("http://127.0.0.1:8001", "127.0.0.1:8000"),
            Verdict::CrossOrigin
        );
        // `Host` carries no scheme (TLS may end in front of us): a bare host takes the
        // origin's default port; an explicit other port does not match.
        assert_eq!(
            post("https://ctf.example", "ctf.example"),
            Verdict::SameOrigin
        );
        assert_eq!(
            post("https://ctf.example", "ctf.example:80"),
            Verdict::CrossOrigin
        );
        assert_eq!(
            post("http://evil.example", "ctf.example"),
            Verdict::CrossOrigin
        );
        assert_eq!(post("null", "ctf.example"), Verdict::CrossOrigin);
        assert_eq!(
            post("http://ctf.example/path", "ctf.example"),
            Verdict::CrossOrigin
        );
        assert_eq!(
            post("http://u@ctf.example", "ctf.example"),
            Verdict::CrossOrigin
        );
        assert_eq!(
            verdict(Method::POST, &[("origin", "http://ctf.example")]),
            Verdict::CrossOrigin,
            "no Host to compare with"
        );
    }

    #[test]
    fn non_browser_clients_pass() {
        assert_eq!(verdict(Method::POST, &[]), Verdict::NotBrowser);
        assert_eq!(
            verdict(
                Method::POST,
                &[("cookie", "fctf_session=x"), ("host", "ctf.example")]
            ),
            Verdict::NotBrowser
        );
    }
}
