//! Login sessions: a compact JWT (HS256) in an HttpOnly cookie, naming the user and the session
//! uuid of the login that issued it. The user row holds the uuid of the latest login; a session
//! whose uuid is not that one (an older login, a logout, a password change) is refused, so only
//! the latest login is valid, as in the original.
//!
//! The JWT is written here (no JWT crate): the header is fixed, so a token with another `alg`
//! (`none`, RS256 confusion) never verifies; the MAC is checked in constant time before the
//! claims are parsed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Name of the session cookie.
pub const COOKIE: &str = "fctf_session";

/// Longest session token read (anything longer is refused before any work).
pub const MAX_JWT_LEN: usize = 1024;

/// The JOSE header of every session token, encoded once.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What a session token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The user id.
    pub sub: i64,
    /// The session uuid of the login that issued this token.
    pub sid: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds, exclusive).
    pub exp: i64,
}

/// Why a session token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("malformed session token")]
    Malformed,
    #[error("bad session token signature")]
    BadSignature,
    #[error("session expired")]
    Expired,
}

/// The HMAC key of session tokens (generated on first start, kept in the database).
#[derive(Clone)]
pub struct SessionKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// A key from secret bytes.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            mac: HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        }
    }

    /// The compact JWT of `claims`.
    pub fn mint(&self, claims: &SessionClaims) -> String {
        let header = URL_SAFE_NO_PAD.encode(HEADER);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac.clone();
        mac.update(signing_input.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{tag}")
    }

    /// The claims of `token` if this key signed it and it has not expired at `now_secs`.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<SessionClaims, SessionError> {
        if token.len() > MAX_JWT_LEN {
            return Err(SessionError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SessionError::Malformed);
        };
        if header != URL_SAFE_NO_PAD.encode(HEADER) {
            return Err(SessionError::Malformed);
        }
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| SessionError::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag)
            .map_err(|_| SessionError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| SessionError::Malformed)?;
        let claims: SessionClaims =
            serde_json::from_slice(&payload).map_err(|_| SessionError::Malformed)?;
        if now_secs >= claims.exp {
            return Err(SessionError::Expired);
        }
        Ok(claims)
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

/// The `Set-Cookie` value that stores `token` for `max_age_secs`.
pub fn set_cookie(token: &str, max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}")
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", 0, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> SessionClaims {
        SessionClaims {
            sub: 7,
            sid: "abc".to_owned(),
            iat: 100,
            exp: 200,
        }
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let key = SessionKey::new(b"secret");
        let token = key.mint(&claims());
        assert_eq!(key.verify(&token, 199), Ok(claims()));
        assert_eq!(key.verify(&token, 200), Err(SessionError::Expired));
    }

    #[test]
    fn tampered_foreign_and_alg_none_tokens_are_refused() {
        let key = SessionKey::new(b"secret");
        let token = key.mint(&claims());
        let other = SessionKey::new(b"other").mint(&claims());
        assert_eq!(key.verify(&other, 150), Err(SessionError::BadSignature));
        let mut forged = claims();
        forged.sub = 1;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let parts: Vec<&str> = token.split('.').collect();
        let swapped = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(key.verify(&swapped, 150), Err(SessionError::BadSignature));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert_eq!(key.verify(&none, 150), Err(SessionError::Malformed));
        assert_eq!(key.verify("a.b", 150), Err(SessionError::Malformed));
        assert_eq!(
            key.verify(&"x".repeat(2000), 150),
            Err(SessionError::Malformed)
        );
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let header = "a=1; fctf_session_x=2; fctf_session=tok; b=3";
        assert_eq!(cookie_value(header, COOKIE), Some("tok"));
        assert_eq!(cookie_value("a=1", COOKIE), None);
        assert!(set_cookie("t", 60, true).contains("HttpOnly; SameSite=Lax; Max-Age=60; Secure"));
    }
}
