//! The one TOML config file of a deployment, its `FCTF_*` environment overrides, and its
//! validation.
//!
//! - **One place per field.** Each section is declared once in `sections.rs`; the declaration
//!   yields the struct, its defaults, its reader and its rows in the reference
//!   ([`reference_markdown`], which is `docs/configuration.md`, and [`example_toml`], which is
//!   `fctf.example.toml`; tests keep both files equal to the code).
//! - **Every mistake at once.** [`load`] reads every field even after a mistake and returns all
//!   of them ([`ConfigErrors`]), each with its key path: unknown keys (with "did you mean"),
//!   unknown `FCTF_*` variables, wrong types, out-of-range numbers, malformed URLs, unreadable or
//!   short secret files, unreadable or malformed TLS files, and the rules that span fields.
//! - **Injectable input.** The environment and the files come from a [`ConfigSource`]:
//!   [`ProcessSource`] in production, [`MapSource`] in tests, which never set process variables.
//! - **Secrets stay secret.** Key secrets become keys at load (holding keyed MAC states, not the
//!   secret); `Debug`, errors and [`Config::redacted_toml`] never show one, and URL passwords are
//!   masked.
//!
//! An empty file is a valid config: the **embedded default** (`fctf up`): in-process state store
//! and queue, a SQLite file, and token and signing keys generated at each start.

mod control;
mod error;
mod reference;
mod schema;
mod sections;
mod source;
mod tls;
mod values;

use std::collections::HashMap;
use std::path::Path;

pub use self::control::{
    ConsumerConfig, ContestantConfig, DeploymentConfig, ListenerConfig, RuntimeConfig,
};
pub use self::error::{ConfigError, ConfigErrors, ErrorKind};
pub use self::reference::{example_toml, reference_markdown};
pub use self::sections::{
    DatabaseConfig, GatewayConfig, QueueConfig, SigningConfig, StoreConfig, TokensConfig,
};
pub use self::source::{ConfigSource, MAX_FILE_LEN, MapSource, ProcessSource};
pub use self::tls::{CertChain, PemFile, PrivateKey, TlsIdentity};
pub use self::values::{KeyEntry, KeyOrigin, QueueBackend, RuntimeKind, ServiceUrl, StoreBackend};

use self::schema::{
    EnvOverride, Files, Render, Section, SectionDoc, SectionReader, check_keys, closest, env_name,
};
use self::values::{KeyMaterial, generated_key};

/// Prefix of every environment variable the config reads.
pub const ENV_PREFIX: &str = "FCTF_";

/// `FCTF_*` variables that belong to something else and are not config overrides (the test
/// suite's service addresses). Every other `FCTF_*` variable must name a field.
pub const ENV_NOT_CONFIG: &[&str] = &["FCTF_TEST_"];

/// Declares the sections of [`Config`]: adding a section is one line here.
macro_rules! config_sections {
    ($( $(#[doc = $doc:literal])* $field:ident : $ty:ty, )*) => {
        /// A whole deployment config, every field validated.
        ///
        /// `Debug` shows no secret. `Config::default()` is the embedded default *without* its
        /// generated keys; configs for running come from [`load`] or [`load_file`].
        #[derive(Clone, Debug, Default)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Config {
            /// Reads every section of `table` (unknown sections were already reported).
            fn read(
                table: &toml::Table,
                env: &HashMap<String, EnvOverride>,
                errors: &mut Vec<ConfigError>,
                files: &Files<'_>,
            ) -> Config {
                Config {
                    $( $field: read_section::<$ty>(table, env, errors, files), )*
                }
            }

            /// Each section's name and its fields rendered as TOML literals.
            fn sections(&self, mode: Render) -> Vec<(&'static str, Vec<(&'static str, Option<String>)>)> {
                vec![$( (<$ty as Section>::NAME, self.$field.values(mode)), )*]
            }
        }

        /// The reference of every section, in file order.
        fn section_docs() -> Vec<SectionDoc> {
            vec![$( <$ty as Section>::docs(), )*]
        }

        /// Every section name and its field names.
        fn section_keys() -> Vec<(&'static str, &'static [&'static str])> {
            vec![$( (<$ty as Section>::NAME, <$ty as Section>::KEYS), )*]
        }
    };
}

config_sections! {
    /// `[tokens]`: challenge access token keys and lifetimes.
    tokens: TokensConfig,
    /// `[signing]`: service-to-service request signature keys.
    signing: SigningConfig,
    /// `[store]`: the state store.
    store: StoreConfig,
    /// `[queue]`: the deploy queue.
    queue: QueueConfig,
    /// `[database]`: the database.
    database: DatabaseConfig,
    /// `[gateway]`: the Challenge Gateway.
    gateway: GatewayConfig,
    /// `[contestant]`: the Contestant Service and admin API.
    contestant: ContestantConfig,
    /// `[deployment]`: the Deployment Center.
    deployment: DeploymentConfig,
    /// `[consumer]`: the Deployment Consumer.
    consumer: ConsumerConfig,
    /// `[runtime]`: where instances run.
    runtime: RuntimeConfig,
    /// `[listener]`: the Deployment Listener.
    listener: ListenerConfig,
}

impl Config {
    /// True when every shared backend is in-process, so the whole platform must run in this one
    /// process (`fctf up`); then absent keys are generated instead of required.
    pub fn is_embedded(&self) -> bool {
        self.store.backend == StoreBackend::Memory && self.queue.backend == QueueBackend::Memory
    }

    /// The config as TOML, for `fctf check-config --print`: every field with its value in
    /// force, URL passwords masked, inline secrets shown as `"<redacted>"` and generated keys as
    /// a comment. For reading only: it does not load as it is when it had inline secrets.
    pub fn redacted_toml(&self) -> String {
        let mut out = String::new();
        for (i, (section, values)) in self.sections(Render::Redacted).into_iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&format!("[{section}]\n"));
            for (key, value) in values {
                match value {
                    Some(value) => out.push_str(&format!("{key} = {value}\n")),
                    None => out.push_str(&format!(
                        "# {key}: not set{}\n",
                        generated_note(self, section, key)
                    )),
                }
            }
        }
        out
    }
}

/// Why a key list shows as not set, when its keys were generated.
fn generated_note(config: &Config, section: &str, key: &str) -> &'static str {
    let generated = match (section, key) {
        ("tokens", "keys") => config
            .tokens
            .keys
            .iter()
            .any(|k| *k.origin() == KeyOrigin::Generated),
        ("signing", "keys") => config
            .signing
            .keys
            .iter()
            .any(|k| *k.origin() == KeyOrigin::Generated),
        _ => false,
    };
    if generated {
        " (a random key was generated for this process: the embedded default)"
    } else {
        ""
    }
}

/// Reads a config from TOML text and the environment of `source`. Relative `secret_file` paths
/// are relative to the working directory (use [`load_file`] to have them relative to the file).
///
/// Returns every mistake, or a config in which every rule holds.
pub fn load(toml_text: &str, source: &dyn ConfigSource) -> Result<Config, ConfigErrors> {
    load_from(toml_text, source, None)
}

/// Reads the config file at `path` (through `source`) and the environment of `source`.
/// Relative `secret_file` paths are relative to the file's directory.
pub fn load_file(path: &Path, source: &dyn ConfigSource) -> Result<Config, ConfigErrors> {
    let shown = path.display().to_string();
    let bytes = source.read_file(path).map_err(|error| {
        ConfigErrors(vec![ConfigError::new(
            shown.clone(),
            ErrorKind::Unreadable,
            format!("cannot read the config file: {error}"),
        )])
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ConfigErrors(vec![ConfigError::new(
            shown,
            ErrorKind::InvalidValue,
            "is not UTF-8 text, so it is not a TOML file",
        )])
    })?;
    load_from(&text, source, path.parent())
}

fn load_from(
    toml_text: &str,
    source: &dyn ConfigSource,
    base: Option<&Path>,
) -> Result<Config, ConfigErrors> {
    let table: toml::Table =
        toml::from_str(toml_text).map_err(|e| ConfigErrors(vec![syntax_error(toml_text, &e)]))?;
    let mut errors = Vec::new();
    let env = env_overrides(source, &mut errors);

    let sections = section_keys();
    let names: Vec<&'static str> = sections.iter().map(|(name, _)| *name).collect();
    check_keys("", &table, &names, &mut errors);
    for (name, keys) in &sections {
        match table.get(*name) {
            Some(toml::Value::Table(section)) => check_keys(name, section, keys, &mut errors),
            Some(other) => errors.push(
                ConfigError::new(
                    *name,
                    ErrorKind::WrongType,
                    format!("expected a table, found {}", other.type_str()),
                )
                .with_hint(format!("write it as a [{name}] section")),
            ),
            None => {}
        }
    }

    let files = Files { source, base };
    let mut config = Config::read(&table, &env, &mut errors, &files);
    let embedded = config.is_embedded();
    check_key_list(
        "tokens",
        &config.tokens.active_kid,
        &mut config.tokens.keys,
        embedded,
        &mut errors,
    );
    check_key_list(
        "signing",
        &config.signing.active_kid,
        &mut config.signing.keys,
        embedded,
        &mut errors,
    );
    tls::check_pair(&config.gateway, &mut errors);

    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn read_section<S: Section>(
    table: &toml::Table,
    env: &HashMap<String, EnvOverride>,
    errors: &mut Vec<ConfigError>,
    files: &Files<'_>,
) -> S {
    let mut reader = SectionReader {
        section: S::NAME,
        table: table.get(S::NAME).and_then(toml::Value::as_table),
        env,
        errors,
        files,
    };
    S::read(&mut reader)
}

/// A TOML syntax error, positioned by line and column (1-based, columns in characters).
fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let offset = error.span().map_or(0, |span| span.start).min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let message = error.message().trim().replace('\n', "; ");
    ConfigError::new(
        format!("line {line}, column {column}"),
        ErrorKind::Syntax { line, column },
        format!("invalid TOML: {message}"),
    )
}

/// The `FCTF_*` overrides of `source`, keyed by field path; every `FCTF_*` variable that names
/// no field is a mistake (a typo must not be silently ignored).
fn env_overrides(
    source: &dyn ConfigSource,
    errors: &mut Vec<ConfigError>,
) -> HashMap<String, EnvOverride> {
    let fields: Vec<(String, String)> = section_keys()
        .into_iter()
        .flat_map(|(section, keys)| {
            keys.iter()
                .map(move |key| (env_name(section, key), format!("{section}.{key}")))
        })
        .collect();
    let mut vars = source.env_vars();
    vars.sort();
    let mut overrides = HashMap::new();
    for (var, text) in vars {
        if !var.starts_with(ENV_PREFIX) || ENV_NOT_CONFIG.iter().any(|p| var.starts_with(p)) {
            continue;
        }
        match fields.iter().find(|(name, _)| *name == var) {
            Some((_, path)) => {
                overrides.insert(path.clone(), EnvOverride { var, text });
            }
            None => {
                let hint = match closest(&var, fields.iter().map(|(name, _)| name.as_str())) {
                    Some(near) => format!("did you mean {near}?"),
                    None => {
                        "config variables are FCTF_<SECTION>__<FIELD>; see docs/configuration.md"
                            .to_owned()
                    }
                };
                errors.push(
                    ConfigError::new(var, ErrorKind::UnknownEnvVar, "names no config field")
                        .with_hint(hint),
                );
            }
        }
    }
    overrides
}

/// The rules across a key list and its active id: the active id names a key; keys are required
/// outside the embedded default, where absent keys are generated instead.
fn check_key_list<K: KeyMaterial>(
    section: &str,
    active_kid: &str,
    keys: &mut Vec<KeyEntry<K>>,
    embedded: bool,
    errors: &mut Vec<ConfigError>,
) {
    // A rule across fields that are themselves wrong would only repeat their mistakes.
    let prefix = format!("{section}.");
    if errors.iter().any(|e| e.path.starts_with(&prefix)) {
        return;
    }
    if keys.is_empty() {
        if !embedded {
            errors.push(
                ConfigError::new(
                    format!("{section}.keys"),
                    ErrorKind::Missing,
                    "is required when store.backend or queue.backend is not \"memory\"",
                )
                .with_hint(format!(
                    "every process must share the keys: add keys = [{{ kid = \"{active_kid}\", \
                     secret_file = \"...\" }}]"
                )),
            );
            return;
        }
        match generated_key(active_kid) {
            Ok(entry) => keys.push(entry),
            // Unreachable while the active id's rule matches the key types' (a checked kid
            // always builds); reported rather than assumed.
            Err(_) => errors.push(ConfigError::new(
                format!("{section}.active_kid"),
                ErrorKind::InvalidValue,
                "cannot name a generated key",
            )),
        }
        return;
    }
    if !keys.iter().any(|entry| entry.kid() == active_kid) {
        let known: Vec<&str> = keys.iter().map(KeyEntry::kid).collect();
        errors.push(
            ConfigError::new(
                format!("{section}.active_kid"),
                ErrorKind::Conflict,
                format!("\"{active_kid}\" names no key in {section}.keys"),
            )
            .with_hint(format!("configured: {}", known.join(", "))),
        );
    }
}
