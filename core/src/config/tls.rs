//! The gateway's TLS files (`gateway.tls_cert_file`, `gateway.tls_key_file`): a PEM certificate
//! chain and its private key, read and checked when the config loads, so that `fctf
//! check-config` and a starting gateway report a missing or malformed file as a config mistake
//! naming the file. Whether the key belongs to the certificate is checked where the TLS library
//! is, when the gateway builds its TLS config.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::error::{ConfigError, ErrorKind};
use super::schema::{FieldCx, Problem, Render, Setting, toml_string};
use super::sections::GatewayConfig;

/// What a PEM file named by the config must hold.
pub(crate) trait PemContent: Clone + Sized {
    /// Parses the file's contents; `Err` is what is wrong, in a clause that follows the path.
    fn from_pem(contents: &[u8]) -> Result<Self, Problem>;
}

/// The certificate chain of `gateway.tls_cert_file`: the server certificate first, then its
/// intermediates, as the file lists them.
#[derive(Clone)]
pub struct CertChain(pub Vec<CertificateDer<'static>>);

/// The private key of `gateway.tls_key_file` (PKCS#8, PKCS#1 or SEC1).
#[derive(Clone)]
pub struct PrivateKey(Arc<PrivateKeyDer<'static>>);

impl PrivateKey {
    /// The key, for a TLS library.
    pub fn der(&self) -> PrivateKeyDer<'static> {
        self.0.clone_key()
    }
}

impl fmt::Debug for CertChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertChain({} certificates)", self.0.len())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A PEM file named by a config field, read and parsed at load; unset (the empty string) by
/// default.
#[derive(Clone)]
pub struct PemFile<T> {
    loaded: Option<(PathBuf, T)>,
}

impl<T> PemFile<T> {
    /// No file.
    pub const fn unset() -> Self {
        PemFile { loaded: None }
    }

    /// True when the field names a file.
    pub fn is_set(&self) -> bool {
        self.loaded.is_some()
    }

    /// The file's path (resolved against the config file's directory), when set.
    pub fn path(&self) -> Option<&Path> {
        self.loaded.as_ref().map(|(path, _)| path.as_path())
    }

    /// What the file holds, when set.
    pub fn contents(&self) -> Option<&T> {
        self.loaded.as_ref().map(|(_, contents)| contents)
    }
}

impl<T> Default for PemFile<T> {
    fn default() -> Self {
        Self::unset()
    }
}

impl<T> fmt::Debug for PemFile<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The path only: the contents may be a private key.
        match self.path() {
            Some(path) => write!(f, "PemFile({})", path.display()),
            None => f.write_str("PemFile(unset)"),
        }
    }
}

impl<T: PemContent> Setting for PemFile<T> {
    const TYPE: &'static str = "string (path)";
    const ENV_IS_TEXT: bool = true;

    fn parse(value: &toml::Value, cx: &mut FieldCx<'_>) -> Option<Self> {
        let Some(file) = value.as_str() else {
            cx.wrong_type("", "a path string", value);
            return None;
        };
        if file.is_empty() {
            return Some(Self::unset());
        }
        let path = cx.files.resolve(file);
        let contents = match cx.files.source.read_file(&path) {
            Ok(contents) => contents,
            Err(error) => {
                cx.report(Problem::new(
                    ErrorKind::Unreadable,
                    format!("cannot read {}: {error}", path.display()),
                ));
                return None;
            }
        };
        match T::from_pem(&contents) {
            Ok(parsed) => Some(PemFile {
                loaded: Some((path, parsed)),
            }),
            Err(mut problem) => {
                problem.message = format!("{} {}", path.display(), problem.message);
                cx.report(problem);
                None
            }
        }
    }

    fn render(&self, _: Render) -> Option<String> {
        self.path().map(|path| toml_string(&path.to_string_lossy()))
    }
}

/// A PEM syntax error, as a problem.
fn malformed(error: &pem::Error) -> Problem {
    Problem::new(
        ErrorKind::InvalidValue,
        format!("is not a well-formed PEM file ({error})"),
    )
}

impl PemContent for CertChain {
    fn from_pem(contents: &[u8]) -> Result<Self, Problem> {
        let chain = CertificateDer::pem_slice_iter(contents)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| malformed(&error))?;
        if chain.is_empty() {
            return Err(Problem::new(
                ErrorKind::InvalidValue,
                "holds no certificate (a PEM `-----BEGIN CERTIFICATE-----` block)",
            )
            .hint("the server certificate first, then its intermediates (a \"fullchain\" file)"));
        }
        Ok(CertChain(chain))
    }
}

impl PemContent for PrivateKey {
    fn from_pem(contents: &[u8]) -> Result<Self, Problem> {
        let keys = PrivateKeyDer::pem_slice_iter(contents)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| malformed(&error))?;
        let mut keys = keys.into_iter();
        match (keys.next(), keys.next()) {
            (Some(key), None) => Ok(PrivateKey(Arc::new(key))),
            (Some(_), Some(_)) => Err(Problem::new(
                ErrorKind::InvalidValue,
                "holds more than one private key",
            )
            .hint("keep only the key of tls_cert_file")),
            (None, _) if contains(contents, b"ENCRYPTED PRIVATE KEY") => Err(Problem::new(
                ErrorKind::InvalidValue,
                "holds an encrypted private key",
            )
            .hint("the gateway reads an unencrypted key: `openssl pkey -in KEY -out key.pem`")),
            (None, _) => Err(Problem::new(
                ErrorKind::InvalidValue,
                "holds no private key (a PEM `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` \
                 or `EC PRIVATE KEY` block)",
            )),
        }
    }
}

/// True when `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A certificate chain and its private key, for a TLS server.
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    /// The chain, server certificate first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The certificate's private key.
    pub key: PrivateKey,
    /// Where the chain came from, for error messages.
    pub cert_path: PathBuf,
}

impl GatewayConfig {
    /// The TLS certificate and key, when both are set (in a config returned by
    /// [`load`](super::load), either both are or neither is).
    pub fn tls_identity(&self) -> Option<TlsIdentity> {
        let (cert_path, chain) = self.tls_cert_file.loaded.as_ref()?;
        let key = self.tls_key_file.contents()?;
        Some(TlsIdentity {
            cert_chain: chain.0.clone(),
            key: key.clone(),
            cert_path: cert_path.clone(),
        })
    }

    /// [`Self::tls_detect_ms`] as a duration.
    pub fn tls_detect(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.tls_detect_ms)
    }

    /// [`Self::tls_handshake_timeout_ms`] as a duration.
    pub fn tls_handshake_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.tls_handshake_timeout_ms)
    }
}

/// The rule across the two TLS files: both or neither.
pub(crate) fn check_pair(gateway: &GatewayConfig, errors: &mut Vec<ConfigError>) {
    // A file that is itself wrong was reported already; "the other one is missing" would only
    // add noise.
    if errors
        .iter()
        .any(|e| e.path == "gateway.tls_cert_file" || e.path == "gateway.tls_key_file")
    {
        return;
    }
    let missing = match (
        gateway.tls_cert_file.is_set(),
        gateway.tls_key_file.is_set(),
    ) {
        (true, false) => ("gateway.tls_key_file", "tls_cert_file"),
        (false, true) => ("gateway.tls_cert_file", "tls_key_file"),
        _ => return,
    };
    errors.push(
        ConfigError::new(
            missing.0,
            ErrorKind::Missing,
            format!("is required when gateway.{} is set", missing.1),
        )
        .with_hint("TLS needs both the certificate chain and its private key"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, MapSource};

    // The config checks the PEM framing only (the gateway's TLS library checks the DER inside),
    // so these bodies need not be real certificates.
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIBAA==\n-----END PRIVATE KEY-----\n";

    fn load(toml: &str, source: &MapSource) -> Result<config::Config, config::ConfigErrors> {
        config::load(toml, source)
    }

    #[test]
    fn no_files_means_no_tls() {
        let config = load("", &MapSource::new()).unwrap();
        assert!(config.gateway.tls_identity().is_none());
        assert!(!config.gateway.tls_cert_file.is_set());
        let config = load(
            "[gateway]\ntls_cert_file = \"\"\ntls_key_file = \"\"",
            &MapSource::new(),
        )
        .unwrap();
        assert!(config.gateway.tls_identity().is_none());
    }

    #[test]
    fn both_files_load_and_render_as_their_paths() {
        let source = MapSource::new()
            .with_file("/tls/chain.pem", format!("{CERT}{CERT}"))
            .with_file("/tls/key.pem", KEY);
        let config = load(
            "[gateway]\ntls_cert_file = \"/tls/chain.pem\"\ntls_key_file = \"/tls/key.pem\"",
            &source,
        )
        .unwrap();
        let identity = config.gateway.tls_identity().unwrap();
        assert_eq!(identity.cert_chain.len(), 2);
        assert_eq!(identity.cert_path, Path::new("/tls/chain.pem"));
        let printed = config.redacted_toml();
        assert!(
            printed.contains("tls_cert_file = \"/tls/chain.pem\""),
            "{printed}"
        );
        assert!(!format!("{config:?}").contains("MIIB"));
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let source = MapSource::new()
            .with_file(
                "/etc/fctf/fctf.toml",
                "[gateway]\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"",
            )
            .with_file("/etc/fctf/c.pem", CERT)
            .with_file("/etc/fctf/k.pem", KEY);
        let config = config::load_file(Path::new("/etc/fctf/fctf.toml"), &source).unwrap();
        assert_eq!(
            config.gateway.tls_key_file.path(),
            Some(Path::new("/etc/fctf/k.pem"))
        );
    }

    #[test]
    fn one_file_without_the_other_is_a_mistake() {
        let source = MapSource::new().with_file("/c.pem", CERT);
        let errors = load("[gateway]\ntls_cert_file = \"/c.pem\"", &source).unwrap_err();
        assert_eq!(errors.paths(), ["gateway.tls_key_file"]);
        assert_eq!(errors.0[0].kind, ErrorKind::Missing);
        let source = MapSource::new().with_file("/k.pem", KEY);
        let errors = load("[gateway]\ntls_key_file = \"/k.pem\"", &source).unwrap_err();
        assert_eq!(errors.paths(), ["gateway.tls_cert_file"]);
    }

    #[test]
    fn bad_files_are_listed_with_their_paths() {
        let source = MapSource::new()
            .with_file("/swapped-cert.pem", KEY)
            .with_file("/swapped-key.pem", CERT);
        let errors = load(
            "[gateway]\ntls_cert_file = \"/swapped-cert.pem\"\ntls_key_file = \"/swapped-key.pem\"",
            &source,
        )
        .unwrap_err();
        assert_eq!(
            errors.paths(),
            ["gateway.tls_cert_file", "gateway.tls_key_file"]
        );
        assert!(
            errors.0[0]
                .message
                .starts_with("/swapped-cert.pem holds no certificate")
        );
        assert!(
            errors.0[1]
                .message
                .starts_with("/swapped-key.pem holds no private key")
        );

        let errors = load(
            "[gateway]\ntls_cert_file = \"/missing.pem\"\ntls_key_file = \"/missing-key.pem\"",
            &MapSource::new(),
        )
        .unwrap_err();
        assert_eq!(errors.0[0].kind, ErrorKind::Unreadable);
        assert!(
            errors.0[0].message.contains("/missing.pem"),
            "{}",
            errors.0[0]
        );
        assert!(errors.0[1].message.contains("/missing-key.pem"));
    }

    #[test]
    fn malformed_encrypted_and_doubled_keys_are_named() {
        let broken = "-----BEGIN CERTIFICATE-----\nMIIBAA==\n";
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBAA==\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let doubled = format!("{KEY}{KEY}");
        let cases = [
            (broken, "tls_cert_file", "is not a well-formed PEM file"),
            (encrypted, "tls_key_file", "holds an encrypted private key"),
            (
                doubled.as_str(),
                "tls_key_file",
                "holds more than one private key",
            ),
        ];
        for (contents, field, want) in cases {
            let source = MapSource::new()
                .with_file("/c.pem", CERT)
                .with_file("/k.pem", KEY)
                .with_file("/bad.pem", contents);
            let (cert, key) = if field == "tls_cert_file" {
                ("/bad.pem", "/k.pem")
            } else {
                ("/c.pem", "/bad.pem")
            };
            let errors = load(
                &format!("[gateway]\ntls_cert_file = \"{cert}\"\ntls_key_file = \"{key}\""),
                &source,
            )
            .unwrap_err();
            assert_eq!(errors.paths(), [format!("gateway.{field}")], "{errors}");
            assert!(
                errors.0[0].message.starts_with(&format!("/bad.pem {want}")),
                "{errors}"
            );
        }
    }

    #[test]
    fn an_environment_variable_names_a_file() {
        let source = MapSource::new()
            .with_env("FCTF_GATEWAY__TLS_CERT_FILE", "/c.pem")
            .with_env("FCTF_GATEWAY__TLS_KEY_FILE", "/k.pem")
            .with_file("/c.pem", CERT)
            .with_file("/k.pem", KEY);
        assert!(load("", &source).unwrap().gateway.tls_identity().is_some());
    }
}
