//! Service-to-service request signatures with replay protection.
//!
//! Every call into the Deployment Center (from the Contestant Service, the admin API and the Argo
//! exit-hook callback) carries three headers that prove which service sent it, that nothing in it
//! was changed, and that it is fresh. This replaces the original system's MD5 scheme and its
//! unauthenticated workflow callback.
//!
//! # Wire format (version 1)
//!
//! ```text
//! x-fctf-timestamp: 1700000000                      unix seconds, decimal, no leading zeros
//! x-fctf-nonce:     q3Vv0Yf0Gk2mJw8cT1l9xA          16..=64 chars of [A-Za-z0-9_-]
//! x-fctf-signature: v1=<kid>:<tag>                  kid: 1..=32 chars of [A-Za-z0-9_-]
//!                                                   tag: base64url, no padding (43 chars)
//! ```
//!
//! `tag` is HMAC-SHA256 under the key named `kid` over the *string to sign*: these seven lines
//! joined by `\n`, with no trailing newline:
//!
//! ```text
//! fctf-signature-v1
//! <kid>
//! <METHOD>                upper-cased
//! <path and query>        the request target exactly as sent, e.g. /api/v1/start?x=1
//! <timestamp>
//! <nonce>
//! <sha256(body)>          lowercase hex; an absent body is the empty body
//! ```
//!
//! No field can contain a newline (each is checked, on both sides), so the string is
//! unambiguous; the first line separates this MAC from any other use of the same secret, and
//! the key id is signed so a tag can only ever verify under the key it names. A shell signer
//! (the Argo exit hook) needs only `printf`, `sha256sum` and `openssl dgst -sha256 -hmac`.
//!
//! # Checks
//!
//! [`verify`] is pure: header syntax, key lookup, the MAC (constant time, via
//! [`hmac::Mac::verify_slice`]) and the time window, in that order. The MAC is checked before the
//! window so that [`SignatureError::Skewed`] only ever counts genuine requests from a signer
//! whose clock is off, which is what an operator needs to see. [`check_replay`] then remembers the
//! nonce in the [`StateStore`] for the whole time the request could still pass the window; it
//! fails *closed* when the store is down (`TEST-PLAN.md`, decision 3). [`authenticate`] runs both
//! and is what a handler should call.
//!
//! # Key rotation
//!
//! Signers sign with one [`SigningKey`]; verifiers hold a [`KeyRing`] of every key id still
//! accepted. Rotate by adding the new key to every verifier's ring, then switching the signers,
//! then removing the old key.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

use crate::store::{StateStore, StoreError};

/// Header carrying the signing time in unix seconds.
pub const HEADER_TIMESTAMP: &str = "x-fctf-timestamp";
/// Header carrying the request's single-use nonce.
pub const HEADER_NONCE: &str = "x-fctf-nonce";
/// Header carrying `v1=<kid>:<base64url tag>`.
pub const HEADER_SIGNATURE: &str = "x-fctf-signature";

/// How far a request's timestamp may be from the verifier's clock, in either direction, unless
/// configured otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Shortest accepted secret, in bytes (the output size of SHA-256: a shorter key weakens HMAC).
pub const MIN_SECRET_LEN: usize = 32;

/// Shortest accepted nonce, in characters (16 base64url characters carry 96 bits).
pub const NONCE_MIN_LEN: usize = 16;
/// Longest accepted nonce, in characters.
pub const NONCE_MAX_LEN: usize = 64;
/// Longest accepted key id, in characters.
pub const KEY_ID_MAX_LEN: usize = 32;

/// Version tag at the start of the signature header value.
const SCHEME_PREFIX: &str = "v1=";
/// First line of the string to sign (domain separation and format version).
const STRING_TO_SIGN_LABEL: &str = "fctf-signature-v1";
/// Length of a base64url (unpadded) HMAC-SHA256 tag.
const TAG_B64_LEN: usize = 43;
/// Longest timestamp header: `u64::MAX` has 20 digits.
const TIMESTAMP_MAX_LEN: usize = 20;
/// Longest signature header: `v1=` + kid + `:` + tag.
const SIGNATURE_MAX_LEN: usize = SCHEME_PREFIX.len() + KEY_ID_MAX_LEN + 1 + TAG_B64_LEN;
/// Longest method accepted (longer than any registered HTTP method).
const METHOD_MAX_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a key could not be built or added to a ring. Configuration errors: reported at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error(
        "signing secret for key {kid:?} has {len} bytes; at least {MIN_SECRET_LEN} are required"
    )]
    SecretTooShort {
        /// The key id the secret was given for.
        kid: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The key id is empty, too long, or not made of `[A-Za-z0-9_-]`.
    #[error(
        "signing key id {0:?} must be 1..={KEY_ID_MAX_LEN} characters of A-Z, a-z, 0-9, '_', '-'"
    )]
    InvalidKeyId(String),
    /// Two keys in one ring have the same id.
    #[error("signing key id {0:?} appears twice")]
    DuplicateKeyId(String),
    /// A ring without keys would refuse every request.
    #[error("a signing key ring needs at least one key")]
    EmptyRing,
}

/// One named HMAC-SHA256 key. Holds only the pre-keyed MAC state, never the raw secret, and
/// its `Debug` output shows the key id alone.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    mac: HmacSha256,
}

impl SigningKey {
    /// A key named `kid` with `secret` (at least [`MIN_SECRET_LEN`] bytes).
    pub fn new(kid: impl Into<String>, secret: &[u8]) -> Result<Self, KeyError> {
        let kid = kid.into();
        if !is_valid_kid(&kid) {
            return Err(KeyError::InvalidKeyId(kid));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::SecretTooShort {
                kid,
                len: secret.len(),
            });
        }
        let mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
        Ok(Self { kid, mac })
    }

    /// The key id carried in the signature header.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The keys a verifier accepts, by id.
#[derive(Clone, Debug)]
pub struct KeyRing {
    // A handful of keys at most (current + the one being rotated out): a scan beats a map.
    keys: Vec<SigningKey>,
}

impl KeyRing {
    /// A ring of `keys`; refuses an empty ring and duplicate ids.
    pub fn new(keys: impl IntoIterator<Item = SigningKey>) -> Result<Self, KeyError> {
        let mut ring: Vec<SigningKey> = Vec::new();
        for key in keys {
            if ring.iter().any(|k| k.kid == key.kid) {
                return Err(KeyError::DuplicateKeyId(key.kid));
            }
            ring.push(key);
        }
        if ring.is_empty() {
            return Err(KeyError::EmptyRing);
        }
        Ok(Self { keys: ring })
    }

    /// The key named `kid`, if the ring has it.
    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

impl From<SigningKey> for KeyRing {
    fn from(key: SigningKey) -> Self {
        Self { keys: vec![key] }
    }
}

/// The three signature header values of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    /// Value of [`HEADER_TIMESTAMP`].
    pub timestamp: String,
    /// Value of [`HEADER_NONCE`].
    pub nonce: String,
    /// Value of [`HEADER_SIGNATURE`].
    pub signature: String,
}

impl SignedHeaders {
    /// Reads the three headers through `lookup` (header name → raw value), e.g.
    /// `|name| headers.get(name).map(|v| v.as_bytes())` for an `http::HeaderMap`.
    ///
    /// Checks presence, an upper length bound and ASCII only (so an oversized header is never
    /// copied); [`verify`] checks the rest of the syntax.
    pub fn from_lookup<'a>(
        mut lookup: impl FnMut(&'static str) -> Option<&'a [u8]>,
    ) -> Result<Self, SignatureError> {
        let mut read = |name: &'static str, max_len: usize| -> Result<String, SignatureError> {
            let raw = lookup(name).ok_or(SignatureError::Missing(name))?;
            if raw.len() > max_len || !raw.is_ascii() {
                return Err(SignatureError::Malformed(name));
            }
            String::from_utf8(raw.to_vec()).map_err(|_| SignatureError::Malformed(name))
        };
        Ok(Self {
            timestamp: read(HEADER_TIMESTAMP, TIMESTAMP_MAX_LEN)?,
            nonce: read(HEADER_NONCE, NONCE_MAX_LEN)?,
            signature: read(HEADER_SIGNATURE, SIGNATURE_MAX_LEN)?,
        })
    }

    /// The headers as `(name, value)` pairs, to add to an outgoing request.
    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            (HEADER_TIMESTAMP, &self.timestamp),
            (HEADER_NONCE, &self.nonce),
            (HEADER_SIGNATURE, &self.signature),
        ]
    }
}

/// Why a request could not be signed: an input that the verifier would refuse anyway (a
/// programming error in the caller, reported rather than signed into an unverifiable request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The method is empty, too long, or not an HTTP token.
    #[error("cannot sign: the method is not an HTTP token")]
    Method,
    /// The path does not start with `/`, or contains a control character or a space.
    #[error("cannot sign: the path must start with '/' and contain no control characters")]
    Path,
    /// The nonce is not 16..=64 characters of `[A-Za-z0-9_-]`.
    #[error("cannot sign: the nonce must be {NONCE_MIN_LEN}..={NONCE_MAX_LEN} url-safe characters")]
    Nonce,
}

/// Signs one request with `key` at `now_unix` (seconds) with `nonce` (use [`new_nonce`]).
///
/// `path_and_query` is the request target exactly as it will be sent (`/path?query`), and `body`
/// the exact body bytes (empty when there is none).
pub fn sign(
    key: &SigningKey,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_unix: u64,
    nonce: &str,
) -> Result<SignedHeaders, SignError> {
    let method = canonical_method(method).ok_or(SignError::Method)?;
    if !is_valid_path(path_and_query) {
        return Err(SignError::Path);
    }
    if !is_valid_nonce(nonce) {
        return Err(SignError::Nonce);
    }
    let timestamp = now_unix.to_string();
    let mut mac = key.mac.clone();
    mac.update(&string_to_sign(
        &key.kid,
        &method,
        path_and_query,
        &timestamp,
        nonce,
        body,
    ));
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(SignedHeaders {
        timestamp,
        nonce: nonce.to_owned(),
        signature: format!("{SCHEME_PREFIX}{}:{tag}", key.kid),
    })
}

/// A fresh nonce: 128 random bits from the thread-local CSPRNG, base64url without padding
/// (22 characters).
pub fn new_nonce() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// Proof that a request carried a valid signature inside the window. Only [`verify`] makes one,
/// so [`check_replay`] can only be called on a verified request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRequest {
    kid: String,
    timestamp: u64,
    nonce: String,
}

impl VerifiedRequest {
    /// Id of the key that signed the request (which service, once keys are per service).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signing time, unix seconds.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The request's nonce.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }
}

/// Why a signed request was refused. [`reason`](Self::reason) is safe to send to the caller;
/// `Display` adds detail for logs.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// A signature header is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A header (or the method or path) is not in the expected syntax or too long.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The signature names a key id the verifier does not hold.
    #[error("signature names an unknown key id")]
    UnknownKey,
    /// The tag does not match the request.
    #[error("signature does not match the request")]
    BadSignature,
    /// The timestamp is further from the verifier's clock than the window allows.
    #[error("request timestamp is {skew_secs} s away from now, beyond the window")]
    Skewed {
        /// Distance between the request's timestamp and the verifier's clock, in seconds.
        skew_secs: u64,
    },
    /// The nonce was already used inside its window.
    #[error("nonce already used")]
    Replayed,
    /// The state store could not say whether the nonce is fresh; the request is refused.
    #[error("cannot check the nonce: {0}")]
    StoreUnavailable(#[source] StoreError),
}

impl SignatureError {
    /// A short reason for the caller's error response.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing(_) => "missing request signature",
            Self::Malformed(_) => "malformed request signature",
            Self::UnknownKey => "unknown signing key",
            Self::BadSignature => "bad request signature",
            Self::Skewed { .. } => "request timestamp outside the allowed window",
            Self::Replayed => "request already seen",
            Self::StoreUnavailable(_) => "signature check unavailable, retry later",
        }
    }

    /// A stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing(_) => "missing",
            Self::Malformed(_) => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Skewed { .. } => "skewed",
            Self::Replayed => "replayed",
            Self::StoreUnavailable(_) => "store_unavailable",
        }
    }
}

/// Checks a request's signature and freshness; pure (no store, no clock).
///
/// `path_and_query` must be the raw request target as received (no decoding or normalisation),
/// `body` the exact body bytes, `now_unix` the verifier's clock in seconds. A timestamp exactly
/// `window` away (in either direction) is still accepted. The caller must still run
/// [`check_replay`] (or use [`authenticate`], which does both).
pub fn verify(
    keys: &KeyRing,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    headers: &SignedHeaders,
    now_unix: u64,
    window: Duration,
) -> Result<VerifiedRequest, SignatureError> {
    let method = canonical_method(method).ok_or(SignatureError::Malformed("method"))?;
    if !is_valid_path(path_and_query) {
        return Err(SignatureError::Malformed("path"));
    }
    let timestamp =
        parse_timestamp(&headers.timestamp).ok_or(SignatureError::Malformed(HEADER_TIMESTAMP))?;
    if !is_valid_nonce(&headers.nonce) {
        return Err(SignatureError::Malformed(HEADER_NONCE));
    }
    let (kid, tag) =
        parse_signature(&headers.signature).ok_or(SignatureError::Malformed(HEADER_SIGNATURE))?;
    let key = keys.get(kid).ok_or(SignatureError::UnknownKey)?;

    let mut mac = key.mac.clone();
    mac.update(&string_to_sign(
        kid,
        &method,
        path_and_query,
        &headers.timestamp,
        &headers.nonce,
        body,
    ));
    mac.verify_slice(&tag)
        .map_err(|_| SignatureError::BadSignature)?;

    let skew_secs = now_unix.abs_diff(timestamp);
    if Duration::from_secs(skew_secs) > window {
        return Err(SignatureError::Skewed { skew_secs });
    }
    Ok(VerifiedRequest {
        kid: kid.to_owned(),
        timestamp,
        nonce: headers.nonce.clone(),
    })
}

/// How long a nonce must be remembered: a request signed at `t` passes [`verify`] from
/// `t - window` to `t + window`, and the first use may come at any point of that span, so twice
/// the window plus one second (timestamps have whole-second resolution) covers the rest of it.
pub fn nonce_ttl(window: Duration) -> Duration {
    window
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(1))
}

/// Refuses a nonce already seen; remembers it for [`nonce_ttl`]`(window)` otherwise. Fails
/// closed: a store error refuses the request ([`SignatureError::StoreUnavailable`]).
pub async fn check_replay(
    store: &dyn StateStore,
    verified: &VerifiedRequest,
    window: Duration,
) -> Result<(), SignatureError> {
    match store
        .remember_once(&nonce_key(&verified.nonce), nonce_ttl(window))
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(SignatureError::Replayed),
        Err(e) => Err(SignatureError::StoreUnavailable(e)),
    }
}

/// [`verify`] then [`check_replay`]: the one call a handler needs. The nonce is only recorded
/// for a correctly signed request, so forged requests cannot fill the store.
#[allow(clippy::too_many_arguments)] // mirrors `verify`'s inputs plus the store
pub async fn authenticate(
    keys: &KeyRing,
    store: &dyn StateStore,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    headers: &SignedHeaders,
    now_unix: u64,
    window: Duration,
) -> Result<VerifiedRequest, SignatureError> {
    let verified = verify(
        keys,
        method,
        path_and_query,
        body,
        headers,
        now_unix,
        window,
    )?;
    check_replay(store, &verified, window).await?;
    Ok(verified)
}

/// Name of a used nonce for [`StateStore::remember_once`]; the store files it under
/// [`keys::once`](crate::store::keys::once) (`once:sig-nonce:<nonce>`), so it cannot collide
/// with another kind of entry. A nonce is public (it travels in a header): safe in a key name.
fn nonce_key(nonce: &str) -> String {
    format!("sig-nonce:{nonce}")
}

/// The string to sign (see the module docs). Every field has been validated to contain no
/// newline, so the joined string is unambiguous.
fn string_to_sign(
    kid: &str,
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let body_digest = hex::encode(Sha256::digest(body));
    [
        STRING_TO_SIGN_LABEL,
        kid,
        method,
        path_and_query,
        timestamp,
        nonce,
        &body_digest,
    ]
    .join("\n")
    .into_bytes()
}

/// The method upper-cased, if it is an HTTP token (RFC 9110 `tchar`s) of sane length.
fn canonical_method(method: &str) -> Option<String> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    (!method.is_empty() && method.len() <= METHOD_MAX_LEN && method.bytes().all(is_tchar))
        .then(|| method.to_ascii_uppercase())
}

/// An origin-form request target: starts with `/`, no whitespace or control characters (which
/// also keeps CR and LF out of the string to sign).
fn is_valid_path(path_and_query: &str) -> bool {
    path_and_query.starts_with('/')
        && !path_and_query
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ')
}

fn is_url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn is_valid_nonce(nonce: &str) -> bool {
    (NONCE_MIN_LEN..=NONCE_MAX_LEN).contains(&nonce.len()) && nonce.bytes().all(is_url_safe)
}

fn is_valid_kid(kid: &str) -> bool {
    (1..=KEY_ID_MAX_LEN).contains(&kid.len()) && kid.bytes().all(is_url_safe)
}

/// Unix seconds in one canonical spelling: digits only, no sign, no leading zeros.
fn parse_timestamp(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= TIMESTAMP_MAX_LEN
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// `v1=<kid>:<tag>` → (kid, tag bytes).
fn parse_signature(value: &str) -> Option<(&str, Vec<u8>)> {
    if value.len() > SIGNATURE_MAX_LEN {
        return None;
    }
    let (kid, tag) = value.strip_prefix(SCHEME_PREFIX)?.split_once(':')?;
    if !is_valid_kid(kid) || tag.len() != TAG_B64_LEN {
        return None;
    }
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    Some((kid, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;
    const NONCE: &str = "AAAAAAAAAAAAAAAAAAAAAA";
    const PATH: &str = "/api/v1/instances/start?challenge=7&team=3";
    const BODY: &[u8] = br#"{"challenge":7}"#;
    const WINDOW: Duration = DEFAULT_WINDOW;

    fn key(kid: &str) -> SigningKey {
        SigningKey::new(kid, SECRET).expect("valid test key")
    }

    fn ring() -> KeyRing {
        KeyRing::from(key("k1"))
    }

    fn signed() -> SignedHeaders {
        sign(&key("k1"), "POST", PATH, BODY, NOW, NONCE).expect("valid request")
    }

    fn check(
        method: &str,
        path: &str,
        body: &[u8],
        headers: &SignedHeaders,
        now: u64,
    ) -> Result<VerifiedRequest, SignatureError> {
        verify(&ring(), method, path, body, headers, now, WINDOW)
    }

    /// Asserts that the genuine request (POST `PATH` with `BODY`, at `NOW`) carrying `headers`
    /// is refused as forged.
    #[track_caller]
    fn assert_forged(headers: &SignedHeaders) {
        let outcome = check("POST", PATH, BODY, headers, NOW);
        assert!(
            matches!(outcome, Err(SignatureError::BadSignature)),
            "{outcome:?}"
        );
    }

    /// Replaces one character of `s` at `index` with a different url-safe one.
    fn flip_char(s: &str, index: usize) -> String {
        let mut bytes = s.as_bytes().to_vec();
        bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).expect("ascii")
    }

    #[test]
    fn round_trip_accepts_and_reports_what_was_signed() {
        let headers = signed();
        let verified = check("POST", PATH, BODY, &headers, NOW).expect("genuine request");
        assert_eq!(verified.kid(), "k1");
        assert_eq!(verified.timestamp(), NOW);
        assert_eq!(verified.nonce(), NONCE);
        assert_eq!(headers.timestamp, "1700000000");
        assert_eq!(headers.nonce, NONCE);
    }

    /// Pins the wire format. The expected values were computed outside this code:
    ///
    /// ```text
    /// d=$(printf '%s' '{"challenge":7}' | sha256sum | cut -d' ' -f1)
    /// s='fctf-signature-v1\nk1\nPOST\n/api/v1/instances/start?challenge=7&team=3'
    /// s="$s\n1700000000\nAAAAAAAAAAAAAAAAAAAAAA\n$d"
    /// printf "$s" | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef -binary \
    ///   | basenc --base64url | tr -d =
    /// ```
    ///
    /// so a shell signer (the Argo exit hook) interoperates.
    #[test]
    fn known_answer_matches_an_independent_implementation() {
        let expected = "fctf-signature-v1\nk1\nPOST\n/api/v1/instances/start?challenge=7&team=3\n\
            1700000000\nAAAAAAAAAAAAAAAAAAAAAA\n\
            e9021d81ad7e81c4d88285034b612f4c05544dc7d859f9309fd09d9d258bd5c9";
        let actual = string_to_sign("k1", "POST", PATH, "1700000000", NONCE, BODY);
        assert_eq!(String::from_utf8(actual).expect("ascii"), expected);
        assert_eq!(
            signed().signature,
            "v1=k1:FyCZAGu_zGO5407-jXDJFKqkyDvaQYudpeU1ujEoxkA"
        );
    }

    #[test]
    fn method_is_case_insensitive_but_tampering_is_not() {
        let headers = signed();
        assert!(check("post", PATH, BODY, &headers, NOW).is_ok());
        assert!(matches!(
            check("PUT", PATH, BODY, &headers, NOW),
            Err(SignatureError::BadSignature)
        ));
    }

    #[test]
    fn tampered_path_or_query_is_rejected() {
        let headers = signed();
        for path in [
            "/api/v1/instances/stop?challenge=7&team=3",
            "/api/v1/instances/start?challenge=7&team=4",
            "/api/v1/instances/start?team=3&challenge=7",
            "/api/v1/instances/start",
            "/api/v1/instances/start?challenge=7&team=3&",
            "/api/v1/instances/start/?challenge=7&team=3",
        ] {
            assert!(
                matches!(
                    check("POST", path, BODY, &headers, NOW),
                    Err(SignatureError::BadSignature)
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn tampered_body_is_rejected() {
        let headers = signed();
        for body in [
            &br#"{"challenge":8}"#[..],
            br#"{"challenge":7} "#,
            br#"{"challenge":7"#,
            b"",
        ] {
            assert!(matches!(
                check("POST", PATH, body, &headers, NOW),
                Err(SignatureError::BadSignature)
            ));
        }
    }

    #[test]
    fn tampered_timestamp_is_rejected_even_inside_the_window() {
        let mut headers = signed();
        headers.timestamp = (NOW + 1).to_string();
        assert_forged(&headers);
    }

    #[test]
    fn tampered_nonce_is_rejected() {
        let mut headers = signed();
        headers.nonce = flip_char(NONCE, 5);
        assert_forged(&headers);
    }

    #[test]
    fn tampered_tag_is_rejected_at_every_position() {
        let headers = signed();
        let prefix = "v1=k1:".len();
        for i in prefix..headers.signature.len() {
            let mut tampered = headers.clone();
            tampered.signature = flip_char(&headers.signature, i);
            let outcome = check("POST", PATH, BODY, &tampered, NOW);
            // The last character carries 4 padding bits: some flips there no longer decode.
            assert!(
                matches!(
                    outcome,
                    Err(SignatureError::BadSignature | SignatureError::Malformed(HEADER_SIGNATURE))
                ),
                "position {i}: {outcome:?}"
            );
        }
    }

    #[test]
    fn signature_from_another_key_is_rejected() {
        let other = SigningKey::new("k1", b"another secret of at least 32 bytes!").expect("key");
        let headers = sign(&other, "POST", PATH, BODY, NOW, NONCE).expect("signed");
        assert_forged(&headers);
    }

    #[test]
    fn key_id_is_signed_and_must_be_known() {
        // Same secret under another id: relabelling the header does not verify.
        let ring = KeyRing::new([key("k1"), key("k2")]).expect("ring");
        let mut headers = signed();
        headers.signature = headers.signature.replacen("k1:", "k2:", 1);
        assert!(matches!(
            verify(&ring, "POST", PATH, BODY, &headers, NOW, WINDOW),
            Err(SignatureError::BadSignature)
        ));

        let headers = sign(&key("k9"), "POST", PATH, BODY, NOW, NONCE).expect("signed");
        assert!(matches!(
            check("POST", PATH, BODY, &headers, NOW),
            Err(SignatureError::UnknownKey)
        ));
    }

    #[test]
    fn ring_verifies_each_of_its_keys() {
        let k2 = SigningKey::new("k2", b"a second secret, also 32 bytes long..").expect("key");
        let ring = KeyRing::new([key("k1"), k2.clone()]).expect("ring");
        for signer in [key("k1"), k2] {
            let headers = sign(&signer, "GET", "/", b"", NOW, NONCE).expect("signed");
            let verified =
                verify(&ring, "GET", "/", b"", &headers, NOW, WINDOW).expect("genuine request");
            assert_eq!(verified.kid(), signer.kid());
        }
    }

    #[test]
    fn window_is_inclusive_in_both_directions() {
        let headers = signed();
        let w = WINDOW.as_secs();
        for now in [NOW - w, NOW + w] {
            assert!(
                check("POST", PATH, BODY, &headers, now).is_ok(),
                "now={now}"
            );
        }
        for now in [NOW - w - 1, NOW + w + 1, 0, u64::MAX] {
            match check("POST", PATH, BODY, &headers, now) {
                Err(SignatureError::Skewed { skew_secs }) => {
                    assert_eq!(skew_secs, now.abs_diff(NOW));
                }
                other => panic!("now={now}: {other:?}"),
            }
        }
    }

    #[test]
    fn window_is_configurable() {
        let headers = signed();
        let narrow = Duration::from_secs(5);
        assert!(verify(&ring(), "POST", PATH, BODY, &headers, NOW + 5, narrow).is_ok());
        assert!(matches!(
            verify(&ring(), "POST", PATH, BODY, &headers, NOW + 6, narrow),
            Err(SignatureError::Skewed { skew_secs: 6 })
        ));
        // A sub-second window accepts only the same second.
        let tight = Duration::from_millis(500);
        assert!(verify(&ring(), "POST", PATH, BODY, &headers, NOW, tight).is_ok());
        assert!(verify(&ring(), "POST", PATH, BODY, &headers, NOW + 1, tight).is_err());
    }

    #[test]
    fn forged_request_reports_bad_signature_not_skew() {
        // An old forged request must not be counted as a signer's clock problem.
        let mut headers = signed();
        headers.signature = flip_char(&headers.signature, 10);
        assert!(matches!(
            check("POST", PATH, BODY, &headers, NOW + 3600),
            Err(SignatureError::BadSignature)
        ));
    }

    #[test]
    fn malformed_headers_are_rejected_before_any_mac() {
        let good = signed();
        type Tamper = fn(&mut SignedHeaders);
        let cases: Vec<(&str, Tamper)> = vec![
            (HEADER_TIMESTAMP, |h| h.timestamp = String::new()),
            (HEADER_TIMESTAMP, |h| h.timestamp = "+1700000000".into()),
            (HEADER_TIMESTAMP, |h| h.timestamp = "-1".into()),
            (HEADER_TIMESTAMP, |h| h.timestamp = "01700000000".into()),
            (HEADER_TIMESTAMP, |h| h.timestamp = "1700000000.5".into()),
            (HEADER_TIMESTAMP, |h| {
                h.timestamp = "18446744073709551616".into()
            }),
            (HEADER_TIMESTAMP, |h| h.timestamp = "1".repeat(21)),
            (HEADER_NONCE, |h| h.nonce = "A".repeat(NONCE_MIN_LEN - 1)),
            (HEADER_NONCE, |h| h.nonce = "A".repeat(NONCE_MAX_LEN + 1)),
            (HEADER_NONCE, |h| h.nonce = "AAAAAAAAAAAAAAAAAAAAA=".into()),
            (HEADER_NONCE, |h| h.nonce = "AAAAAAAAAA\nAAAAAAAAAAA".into()),
            (HEADER_NONCE, |h| h.nonce = "AAAAAAAAAAAAAAAAAAAAA+".into()),
            (HEADER_SIGNATURE, |h| h.signature = String::new()),
            (HEADER_SIGNATURE, |h| {
                h.signature = h.signature.replacen("v1=", "v2=", 1)
            }),
            (HEADER_SIGNATURE, |h| {
                h.signature = h.signature.replacen("v1=k1:", "v1=", 1)
            }),
            (HEADER_SIGNATURE, |h| {
                h.signature = h.signature.replacen("k1:", ":", 1)
            }),
            (HEADER_SIGNATURE, |h| {
                h.signature = h.signature.replacen("k1:", "k/1:", 1)
            }),
            (HEADER_SIGNATURE, |h| {
                h.signature = h
                    .signature
                    .replacen("k1:", &format!("{}:", "k".repeat(33)), 1)
            }),
            (HEADER_SIGNATURE, |h| h.signature.push('A')),
            (HEADER_SIGNATURE, |h| {
                h.signature.pop();
            }),
            (HEADER_SIGNATURE, |h| h.signature.push('=')),
            (HEADER_SIGNATURE, |h| {
                h.signature = h.signature.replace('-', "+").replace('_', "/") + "+"
            }),
        ];
        for (i, (header, tamper)) in cases.into_iter().enumerate() {
            let mut headers = good.clone();
            tamper(&mut headers);
            let outcome = check("POST", PATH, BODY, &headers, NOW);
            assert!(
                matches!(outcome, Err(SignatureError::Malformed(h)) if h == header),
                "case {i} ({headers:?}): {outcome:?}"
            );
        }
    }

    #[test]
    fn lookup_reports_missing_oversized_and_non_ascii_headers() {
        let good = signed();
        let present = |h: &'static str| -> Option<&[u8]> {
            good.pairs()
                .into_iter()
                .find(|(n, _)| *n == h)
                .map(|(_, v)| v.as_bytes())
        };
        assert_eq!(
            SignedHeaders::from_lookup(present).expect("all present"),
            good
        );

        for absent in [HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE] {
            let outcome = SignedHeaders::from_lookup(|h| present(h).filter(|_| h != absent));
            assert!(
                matches!(outcome, Err(SignatureError::Missing(h)) if h == absent),
                "{absent}"
            );
        }

        let long = vec![b'1'; 4096];
        let latin1 = b"1700000000\xe9".to_vec();
        for (bad, value) in [(HEADER_NONCE, &long[..]), (HEADER_TIMESTAMP, &latin1[..])] {
            let outcome =
                SignedHeaders::from_lookup(|h| if h == bad { Some(value) } else { present(h) });
            assert!(
                matches!(outcome, Err(SignatureError::Malformed(h)) if h == bad),
                "{bad}: {outcome:?}"
            );
        }
    }

    #[test]
    fn newline_or_control_characters_never_reach_the_string_to_sign() {
        let k = key("k1");
        // Were these signed, "GET\n/a" + "/b" and "GET" + "/a\n/b"-style splits could collide.
        for path in ["/a\n/b", "/a\r\n", "/a\0", "/a b", "/a\t", "a/b", ""] {
            assert_eq!(
                sign(&k, "GET", path, b"", NOW, NONCE),
                Err(SignError::Path),
                "{path:?}"
            );
            let headers = sign(&k, "GET", "/a", b"", NOW, NONCE).expect("signed");
            assert!(matches!(
                check("GET", path, b"", &headers, NOW),
                Err(SignatureError::Malformed("path"))
            ));
        }
        for method in ["GET\n", "G ET", "", "GET/", &"A".repeat(33)] {
            assert_eq!(
                sign(&k, method, "/", b"", NOW, NONCE),
                Err(SignError::Method),
                "{method:?}"
            );
            let headers = sign(&k, "GET", "/", b"", NOW, NONCE).expect("signed");
            assert!(matches!(
                check(method, "/", b"", &headers, NOW),
                Err(SignatureError::Malformed("method"))
            ));
        }
        assert_eq!(
            sign(&k, "GET", "/", b"", NOW, "short"),
            Err(SignError::Nonce)
        );
    }

    #[test]
    fn empty_body_and_absent_body_are_the_same_request() {
        // HTTP does not tell them apart once received, so neither does the signature.
        let headers = sign(&key("k1"), "GET", "/status", &[], NOW, NONCE).expect("signed");
        assert!(check("GET", "/status", b"", &headers, NOW).is_ok());
        assert!(matches!(
            check("GET", "/status", b"\0", &headers, NOW),
            Err(SignatureError::BadSignature)
        ));
        let text = String::from_utf8(string_to_sign("k1", "GET", "/status", "1", NONCE, b""))
            .expect("ascii");
        assert!(
            text.ends_with("\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
    }

    #[test]
    fn body_may_hold_any_bytes_including_newlines() {
        let body = b"line one\nline two\r\n\0\xff";
        let headers = sign(&key("k1"), "PUT", "/x", body, NOW, NONCE).expect("signed");
        assert!(check("PUT", "/x", body, &headers, NOW).is_ok());
    }

    #[test]
    fn keys_refuse_short_secrets_and_bad_ids_and_hide_the_secret() {
        assert_eq!(
            SigningKey::new("k1", &SECRET[..31]).map(|_| ()),
            Err(KeyError::SecretTooShort {
                kid: "k1".into(),
                len: 31
            })
        );
        for kid in ["", "k:1", "k 1", "k\n1", &"k".repeat(33)] {
            assert_eq!(
                SigningKey::new(kid, SECRET).map(|_| ()),
                Err(KeyError::InvalidKeyId(kid.into()))
            );
        }
        let debug = format!("{:?}", key("k1"));
        assert!(
            debug.contains("k1") && debug.contains("redacted"),
            "{debug}"
        );
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        assert!(!format!("{:?}", ring()).contains("0123456789abcdef"));
    }

    #[test]
    fn rings_refuse_duplicates_and_emptiness() {
        assert_eq!(
            KeyRing::new([key("k1"), key("k1")]).map(|_| ()),
            Err(KeyError::DuplicateKeyId("k1".into()))
        );
        assert_eq!(KeyRing::new([]).map(|_| ()), Err(KeyError::EmptyRing));
    }

    #[test]
    fn nonces_are_fresh_valid_and_128_bits() {
        let a = new_nonce();
        let b = new_nonce();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(is_valid_nonce(&a) && is_valid_nonce(&b));
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("base64url").len(), 16);
    }

    #[test]
    fn nonce_ttl_covers_the_window_on_both_sides() {
        assert_eq!(nonce_ttl(DEFAULT_WINDOW), Duration::from_secs(121));
        assert_eq!(nonce_ttl(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn every_error_has_a_reason_and_a_distinct_kind() {
        let errors = [
            SignatureError::Missing(HEADER_NONCE),
            SignatureError::Malformed(HEADER_NONCE),
            SignatureError::UnknownKey,
            SignatureError::BadSignature,
            SignatureError::Skewed { skew_secs: 61 },
            SignatureError::Replayed,
            SignatureError::StoreUnavailable(StoreError::Unavailable("down".into())),
        ];
        let kinds: std::collections::HashSet<_> = errors.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds.len(), errors.len());
        for e in &errors {
            assert!(!e.reason().is_empty() && !e.to_string().is_empty());
        }
        // The store's error text is for logs only.
        assert!(!errors[6].reason().contains("down"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn any_valid_request_round_trips(
                method in "[A-Za-z]{1,10}",
                path in "/[!-~]{0,80}",
                body in proptest::collection::vec(any::<u8>(), 0..256),
                ts in any::<u64>(),
            ) {
                let headers = sign(&key("k1"), &method, &path, &body, ts, NONCE).expect("signed");
                let verified = verify(&ring(), &method, &path, &body, &headers, ts, WINDOW);
                prop_assert!(verified.is_ok());
            }

            #[test]
            fn any_single_body_bit_flip_is_rejected(
                body in proptest::collection::vec(any::<u8>(), 1..256),
                index in any::<prop::sample::Index>(),
                bit in 0..8u8,
            ) {
                let headers = sign(&key("k1"), "POST", "/", &body, NOW, NONCE).expect("signed");
                let mut tampered = body.clone();
                tampered[index.index(body.len())] ^= 1 << bit;
                let outcome = verify(&ring(), "POST", "/", &tampered, &headers, NOW, WINDOW);
                prop_assert!(matches!(outcome, Err(SignatureError::BadSignature)));
            }
        }
    }
}
