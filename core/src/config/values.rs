//! The types config fields have, and the rules that constrain them beyond their type.

use std::fmt;
use std::path::PathBuf;

use super::error::ErrorKind;
use super::schema::{FieldCx, Problem, Render, Rule, Setting, closest, toml_string};
use crate::signing::SigningKey;
use crate::token::TokenKey;

macro_rules! integer_setting {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            const TYPE: &'static str = "integer";
            const ENV_IS_TEXT: bool = false;

            fn parse(value: &toml::Value, cx: &mut FieldCx<'_>) -> Option<Self> {
                let Some(n) = value.as_integer() else {
                    cx.wrong_type("", "an integer", value);
                    return None;
                };
                match <$t>::try_from(n) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        cx.report(Problem::new(
                            ErrorKind::OutOfRange,
                            if n < 0 {
                                format!("must not be negative, got {n}")
                            } else {
                                format!("must be at most {}, got {n}", <$t>::MAX)
                            },
                        ));
                        None
                    }
                }
            }

            fn render(&self, _: Render) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}

integer_setting!(u16, u32, u64);

impl Setting for bool {
    const TYPE: &'static str = "boolean";
    const ENV_IS_TEXT: bool = false;

    fn parse(value: &toml::Value, cx: &mut FieldCx<'_>) -> Option<Self> {
        let Some(b) = value.as_bool() else {
            cx.wrong_type("", "true or false", value);
            return None;
        };
        Some(b)
    }

    fn render(&self, _: Render) -> Option<String> {
        Some(self.to_string())
    }
}

impl Setting for String {
    const TYPE: &'static str = "string";
    const ENV_IS_TEXT: bool = true;

    fn parse(value: &toml::Value, cx: &mut FieldCx<'_>) -> Option<Self> {
        match value.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                cx.wrong_type("", "a string", value);
                None
            }
        }
    }

    fn render(&self, _: Render) -> Option<String> {
        Some(toml_string(self))
    }
}

/// Declares a config enum spelled as one of a few lower-case words.
macro_rules! config_choice {
    (
        $(#[doc = $doc:literal])*
        pub enum $name:ident {
            $( $(#[doc = $vdoc:literal])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[doc = $vdoc])* $variant, )+
        }

        impl $name {
            /// Every value, in the order the reference lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word that names this value in the config file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Setting for $name {
            const TYPE: &'static str = "string";
            const ENV_IS_TEXT: bool = true;

            fn parse(value: &toml::Value, cx: &mut FieldCx<'_>) -> Option<Self> {
                let Some(word) = value.as_str() else {
                    cx.wrong_type("", "a string", value);
                    return None;
                };
                if let Some(found) = Self::ALL.iter().find(|v| v.as_str() == word) {
                    return Some(*found);
                }
                let words: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                let mut problem = Problem::new(
                    ErrorKind::InvalidValue,
                    format!("must be one of {}, got {}", quoted_list(&words), toml_string(word)),
                );
                if let Some(near) = closest(word, words.iter().copied()) {
                    problem = problem.hint(format!("did you mean \"{near}\"?"));
                }
                cx.report(problem);
                None
            }

            fn render(&self, _: Render) -> Option<String> {
                Some(toml_string(self.as_str()))
            }

            fn allowed() -> Option<String> {
                let words: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                Some(format!("one of {}", quoted_list(&words)))
            }
        }
    };
}

fn quoted_list(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

config_choice! {
    /// Which state store holds deployment state, quotas, rate limits and leases.
    pub enum StoreBackend {
        /// In this process: the embedded default, for one process (`fctf up`) only.
        Memory = "memory",
        /// Redis, shared by every process of a deployment.
        Redis = "redis",
    }
}

config_choice! {
    /// Where challenge instances run.
    pub enum RuntimeKind {
        /// Child processes on this machine: the embedded default (`fctf up`) and the tests.
        Local = "local",
        /// Kubernetes objects applied directly by the Deployment Consumer.
        Kubernetes = "kubernetes",
        /// Argo Workflows (`start-chal-v2-template`), which apply the same objects.
        Argo = "argo",
    }
}

config_choice! {
    /// Which queue carries deploy jobs.
    pub enum QueueBackend {
        /// In this process: the embedded default, for one process (`fctf up`) only.
        Memory = "memory",
        /// RabbitMQ, shared by every process of a deployment.
        RabbitMq = "rabbitmq",
    }
}

/// The URL of a service (Redis, RabbitMQ, a database). It may carry a password, so `Debug` and
/// `Display` mask it; [`ServiceUrl::as_str`] gives the URL itself, for connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl(String);

impl ServiceUrl {
    /// A URL as given (checked by the field's [`Url`] rule when read from a config).
    pub fn new(url: impl Into<String>) -> Self {
        ServiceUrl(url.into())
    }

    /// The URL, password included: for connecting, never for printing.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The scheme, lower-case as written (`redis`, `amqp`, `sqlite`, ...).
    pub fn scheme(&self) -> &str {
        self.0.split_once(':').map_or("", |(scheme, _)| scheme)
    }

    /// The URL with the password of its user info, if any, replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some(authority_start) = self.0.find("://").map(|i| i + 3) else {
            return self.0.clone();
        };
        let rest = &self.0[authority_start..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let Some(at) = rest[..authority_end].rfind('@') else {
            return self.0.clone();
        };
        match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &self.0[..authority_start],
                &rest[..colon],
                &rest[at..]
            ),
            None => self.0.clone(),
        }
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceUrl({:?})", self.redacted())
    }
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Setting for ServiceUrl {
    const TYPE: &'static str = "URL";
    const ENV_IS_TEXT: bool = true;

    fn parse(value: &toml::Value, cx: &mut FieldCx<'_>) -> Option<Self> {
        match value.as_str() {
            Some(s) => Some(ServiceUrl(s.to_owned())),
            None => {
                cx.wrong_type("", "a URL string", value);
                None
            }
        }
    }

    fn render(&self, mode: Render) -> Option<String> {
        Some(toml_string(&match mode {
            Render::Plain => self.0.clone(),
            Render::Redacted => self.redacted(),
        }))
    }
}

/// Where a key's secret came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// A secret file (the path as resolved, relative to the config file's directory).
    File(PathBuf),
    /// The config itself (`secret = "..."`; discouraged).
    Inline,
    /// Generated at load, because the embedded default was in force and no key was given. It
    /// lives as long as the process.
    Generated,
}

/// One configured key: its id, where its secret came from, and the key built from it (which
/// keeps only a keyed MAC state, never the secret as such).
#[derive(Clone)]
pub struct KeyEntry<K> {
    kid: String,
    origin: KeyOrigin,
    key: K,
}

impl<K> KeyEntry<K> {
    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Where the secret came from.
    pub fn origin(&self) -> &KeyOrigin {
        &self.origin
    }

    /// The key itself.
    pub fn key(&self) -> &K {
        &self.key
    }
}

/// A key with a fresh random secret, for the embedded default.
pub(crate) fn generated_key<K: KeyMaterial>(kid: &str) -> Result<KeyEntry<K>, KeyProblem> {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    // Hex, so the secret survives the file-contents rule (trailing whitespace trimmed).
    let secret = hex::encode(bytes);
    Ok(KeyEntry {
        kid: kid.to_owned(),
        origin: KeyOrigin::Generated,
        key: K::from_inline(kid, secret.as_bytes())?,
    })
}

impl<K> fmt::Debug for KeyEntry<K> {
    // Id and origin only: whatever `K` prints, this never risks a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("kid", &self.kid)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be built from its id and secret.
#[derive(Debug)]
pub(crate) enum KeyProblem {
    /// The key id is not acceptable.
    Kid(String),
    /// The secret is not acceptable (too short).
    Secret(String),
}

/// A key type that a key list can hold: the challenge-token key and the request-signing key.
pub(crate) trait KeyMaterial: Sized {
    /// A key from a key file's contents (trailing whitespace is not part of the secret).
    fn from_file_contents(kid: &str, contents: &[u8]) -> Result<Self, KeyProblem>;
    /// A key from a secret given inline, taken exactly.
    fn from_inline(kid: &str, secret: &[u8]) -> Result<Self, KeyProblem>;
}

impl KeyMaterial for TokenKey {
    fn from_file_contents(kid: &str, contents: &[u8]) -> Result<Self, KeyProblem> {
        TokenKey::from_file_contents(kid, contents).map_err(token_key_problem)
    }

    fn from_inline(kid: &str, secret: &[u8]) -> Result<Self, KeyProblem> {
        TokenKey::new(kid, secret).map_err(token_key_problem)
    }
}

fn token_key_problem(error: crate::token::KeyError) -> KeyProblem {
    match error {
        crate::token::KeyError::SecretTooShort { .. } => KeyProblem::Secret(error.to_string()),
        _ => KeyProblem::Kid(error.to_string()),
    }
}

impl KeyMaterial for SigningKey {
    fn from_file_contents(kid: &str, contents: &[u8]) -> Result<Self, KeyProblem> {
        Self::from_inline(kid, contents.trim_ascii_end())
    }

    fn from_inline(kid: &str, secret: &[u8]) -> Result<Self, KeyProblem> {
        SigningKey::new(kid, secret).map_err(|error| match error {
            crate::signing::KeyError::SecretTooShort { .. } => {
                KeyProblem::Secret(error.to_string())
            }
            _ => KeyProblem::Kid(error.to_string()),
        })
    }
}

/// How to make a key file, for hints.
const KEY_FILE_HINT: &str = "make one with `head -c 32 /dev/urandom | base64 > FILE`";

/// The keys of one entry of a key list.
const KEY_ENTRY_KEYS: &[&str] = &["kid", "secret_file", "secret"];

impl<K: KeyMaterial> Setting for Vec<KeyEntry<K>> {
    const TYPE: &'static str = "array of tables";
    const ENV_IS_TEXT: bool = false;

    fn parse(value: &toml::Value, cx: &mut FieldCx<'_>) -> Option<Self> {
        let Some(items) = value.as_array() else {
            cx.wrong_type("", "an array of tables", value);
            return None;
        };
        let mut entries: Vec<KeyEntry<K>> = Vec::with_capacity(items.len());
        let mut kids: Vec<String> = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match parse_key_entry::<K>(i, item, &kids, cx) {
                Some(entry) => entries.push(entry),
                None => ok = false,
            }
            // Every id given counts for the duplicate check, even on an entry with a mistake.
            if let Some(kid) = item.get("kid").and_then(toml::Value::as_str) {
                kids.push(kid.to_owned());
            }
        }
        ok.then_some(entries)
    }

    fn render(&self, _: Render) -> Option<String> {
        // Secrets are not kept, so there is nothing to redact: an inline secret shows as a
        // placeholder (which is too short to load, so the output can never be used as is).
        let shown: Vec<String> = self
            .iter()
            .filter_map(|entry| {
                let source = match &entry.origin {
                    KeyOrigin::File(path) => {
                        format!("secret_file = {}", toml_string(&path.to_string_lossy()))
                    }
                    KeyOrigin::Inline => "secret = \"<redacted>\"".to_owned(),
                    KeyOrigin::Generated => return None,
                };
                Some(format!("{{ kid = {}, {source} }}", toml_string(&entry.kid)))
            })
            .collect();
        (!shown.is_empty()).then(|| format!("[{}]", shown.join(", ")))
    }
}

/// One `{ kid, secret_file | secret }` table; reports every mistake in it.
fn parse_key_entry<K: KeyMaterial>(
    index: usize,
    item: &toml::Value,
    earlier_kids: &[String],
    cx: &mut FieldCx<'_>,
) -> Option<KeyEntry<K>> {
    let at = |key: &str| {
        if key.is_empty() {
            format!("[{index}]")
        } else {
            format!("[{index}].{key}")
        }
    };
    let Some(table) = item.as_table() else {
        cx.wrong_type(&at(""), "a table { kid, secret_file }", item);
        return None;
    };
    let mut ok = true;
    for key in table.keys() {
        if !KEY_ENTRY_KEYS.contains(&key.as_str()) {
            let mut problem = Problem::new(ErrorKind::UnknownKey, "unknown key");
            problem.hint = Some(match closest(key, KEY_ENTRY_KEYS.iter().copied()) {
                Some(near) => format!("did you mean `{near}`?"),
                None => "a key has `kid` and `secret_file` (or `secret`)".to_owned(),
            });
            cx.report_at(&at(key), problem);
            ok = false;
        }
    }

    let kid = match table.get("kid") {
        Some(toml::Value::String(kid)) => {
            if earlier_kids.contains(kid) {
                cx.report_at(
                    &at("kid"),
                    Problem::new(ErrorKind::Conflict, format!("duplicate key id \"{kid}\""))
                        .hint("each key needs its own id"),
                );
                ok = false;
            }
            Some(kid.as_str())
        }
        Some(other) => {
            cx.wrong_type(&at("kid"), "a string", other);
            None
        }
        None => {
            cx.report_at(
                &at("kid"),
                Problem::new(ErrorKind::Missing, "is required").hint("every key needs an id"),
            );
            None
        }
    };

    let built = match (table.get("secret_file"), table.get("secret")) {
        (Some(_), Some(_)) => {
            cx.report_at(
                &at(""),
                Problem::new(
                    ErrorKind::Conflict,
                    "has both `secret_file` and `secret`; set exactly one",
                )
                .hint("prefer secret_file, which keeps the secret out of the config"),
            );
            None
        }
        (None, None) => {
            cx.report_at(
                &at("secret_file"),
                Problem::new(ErrorKind::Missing, "is required (or an inline `secret`)")
                    .hint(KEY_FILE_HINT),
            );
            None
        }
        (Some(file), None) => {
            let Some(file) = file.as_str() else {
                cx.wrong_type(&at("secret_file"), "a path string", file);
                return None;
            };
            let path = cx.files.resolve(file);
            match cx.files.source.read_file(&path) {
                Err(error) => {
                    cx.report_at(
                        &at("secret_file"),
                        Problem::new(
                            ErrorKind::Unreadable,
                            format!("cannot read {}: {error}", path.display()),
                        )
                        .hint(KEY_FILE_HINT),
                    );
                    None
                }
                Ok(contents) => kid.map(|kid| {
                    (
                        "secret_file",
                        K::from_file_contents(kid, &contents),
                        KeyOrigin::File(path),
                    )
                }),
            }
        }
        (None, Some(secret)) => {
            let Some(secret) = secret.as_str() else {
                // Only the type is named: the value may be a secret.
                cx.report_at(
                    &at("secret"),
                    Problem::new(ErrorKind::WrongType, "expected a string"),
                );
                return None;
            };
            kid.map(|kid| {
                (
                    "secret",
                    K::from_inline(kid, secret.as_bytes()),
                    KeyOrigin::Inline,
                )
            })
        }
    };

    let (secret_key, result, origin) = built?;
    match result {
        Ok(key) if ok => Some(KeyEntry {
            kid: kid?.to_owned(),
            origin,
            key,
        }),
        Ok(_) => None,
        Err(KeyProblem::Kid(message)) => {
            cx.report_at(&at("kid"), Problem::new(ErrorKind::InvalidValue, message));
            None
        }
        Err(KeyProblem::Secret(message)) => {
            cx.report_at(
                &at(secret_key),
                Problem::new(ErrorKind::InvalidValue, message).hint(KEY_FILE_HINT),
            );
            None
        }
    }
}

/// A number within `min..=max`.
#[derive(Debug)]
pub(crate) struct Range<N>(pub(crate) N, pub(crate) N);

impl<N: Copy + PartialOrd + fmt::Display> Rule<N> for Range<N> {
    fn check(&self, value: &N) -> Result<(), Problem> {
        if *value < self.0 || *value > self.1 {
            return Err(Problem::new(
                ErrorKind::OutOfRange,
                format!("must be between {} and {}, got {value}", self.0, self.1),
            ));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} to {}", self.0, self.1)
    }
}

/// A name made of printable characters without spaces, at most `max` bytes; empty only when
/// `allow_empty`.
#[derive(Debug)]
pub(crate) struct Name {
    pub(crate) max: usize,
    pub(crate) allow_empty: bool,
}

impl Rule<String> for Name {
    fn check(&self, value: &String) -> Result<(), Problem> {
        if value.is_empty() && !self.allow_empty {
            return Err(Problem::new(ErrorKind::InvalidValue, "must not be empty"));
        }
        if value.len() > self.max {
            return Err(Problem::new(
                ErrorKind::InvalidValue,
                format!("must be at most {} bytes, got {}", self.max, value.len()),
            ));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Problem::new(
                ErrorKind::InvalidValue,
                format!(
                    "must not contain spaces or control characters, got {}",
                    toml_string(value)
                ),
            ));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let min = if self.allow_empty { 0 } else { 1 };
        format!("{min} to {} bytes, no spaces", self.max)
    }
}

/// A listen address: `IP:PORT` (`0.0.0.0:8080`, `[::]:8080`, `127.0.0.1:9100`). Listeners bind
/// addresses, not host names, so a name that resolves differently later cannot move them.
#[derive(Debug)]
pub(crate) struct ListenAddr;

impl Rule<String> for ListenAddr {
    fn check(&self, value: &String) -> Result<(), Problem> {
        match value.parse::<std::net::SocketAddr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(Problem::new(
                ErrorKind::InvalidValue,
                format!(
                    "must be an IP address and port such as \"0.0.0.0:8080\" or \"[::]:8080\", got {}",
                    toml_string(value)
                ),
            )),
        }
    }

    fn describe(&self) -> String {
        "`IP:PORT`".to_owned()
    }
}

/// A key id: 1 to 32 characters of `A-Z a-z 0-9 _ -` (what tokens and signatures carry).
#[derive(Debug)]
pub(crate) struct KeyId;

impl Rule<String> for KeyId {
    fn check(&self, value: &String) -> Result<(), Problem> {
        let valid = (1..=crate::token::MAX_KID_LEN).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(())
        } else {
            Err(Problem::new(
                ErrorKind::InvalidValue,
                format!(
                    "must be 1 to {} characters of A-Z, a-z, 0-9, '_' or '-', got {}",
                    crate::token::MAX_KID_LEN,
                    toml_string(value)
                ),
            ))
        }
    }

    fn describe(&self) -> String {
        format!(
            "1 to {} characters of `A-Z a-z 0-9 _ -`",
            crate::token::MAX_KID_LEN
        )
    }
}

/// A URL with one of `schemes`: `scheme://[user[:password]@]host[:port][/path]`, or for
/// `sqlite`, `sqlite:` followed by a path.
#[derive(Debug)]
pub(crate) struct Url(pub(crate) &'static [&'static str]);

impl Rule<ServiceUrl> for Url {
    fn check(&self, value: &ServiceUrl) -> Result<(), Problem> {
        url_problem(value.as_str(), self.0).map_or(Ok(()), |message| {
            Err(Problem::new(
                ErrorKind::InvalidValue,
                format!("{message}, got {}", toml_string(&value.redacted())),
            ))
        })
    }

    fn describe(&self) -> String {
        format!("scheme {}", quoted_list(self.0))
    }
}

/// What is wrong with `url`, if anything.
fn url_problem(url: &str, schemes: &[&str]) -> Option<String> {
    let schemes_text = schemes.join(", ");
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("is not a URL: it contains spaces or control characters".to_owned());
    }
    let Some((scheme, rest)) = url.split_once(':') else {
        return Some(format!("is not a URL: expected {schemes_text}://..."));
    };
    if !schemes.contains(&scheme) {
        return Some(format!("must use scheme {schemes_text}"));
    }
    if scheme == "sqlite" {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        return path
            .is_empty()
            .then(|| "names no database file (sqlite://PATH)".to_owned());
    }
    let Some(rest) = rest.strip_prefix("//") else {
        return Some(format!("is not a URL: expected {scheme}://HOST[:PORT]"));
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..]);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Some("has text after the IPv6 address".to_owned()),
            },
            None => return Some("has an unclosed IPv6 address".to_owned()),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'));
    if !host_ok {
        return Some("has no valid host".to_owned());
    }
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0))
    {
        return Some("has a port that is not 1 to 65535".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        let url = ServiceUrl::new("amqp://guest:s3cret@127.0.0.1:5672/vhost?x=@");
        assert_eq!(url.redacted(), "amqp://guest:***@127.0.0.1:5672/vhost?x=@");
        assert!(!format!("{url:?} {url}").contains("s3cret"));
        let no_password = ServiceUrl::new("mysql://root@127.0.0.1:3306/test");
        assert_eq!(no_password.redacted(), no_password.as_str());
    }

    #[test]
    fn urls_are_checked_for_scheme_host_and_port() {
        let redis = &["redis", "rediss"][..];
        assert_eq!(url_problem("redis://127.0.0.1:6379", redis), None);
        assert_eq!(
            url_problem("rediss://u:p@cache.example:6380/2", redis),
            None
        );
        assert_eq!(url_problem("redis://[::1]:6379", redis), None);
        assert!(url_problem("http://127.0.0.1", redis).is_some());
        assert!(url_problem("redis://", redis).is_some());
        assert!(url_problem("redis://host:0", redis).is_some());
        assert!(url_problem("redis://host:70000", redis).is_some());
        assert!(url_problem("redis://host:63x9", redis).is_some());
        assert!(url_problem("redis:/host", redis).is_some());
        assert!(url_problem("redis://ho st", redis).is_some());
        let db = &["sqlite", "mysql"][..];
        assert_eq!(url_problem("sqlite://data/fctf.db", db), None);
        assert_eq!(url_problem("sqlite::memory:", db), None);
        assert!(url_problem("sqlite://", db).is_some());
    }
}
