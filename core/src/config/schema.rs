//! The machinery behind the section tables in `sections.rs`: how one field is read (file value,
//! environment override, default), checked, documented and written back out.
//!
//! A section is declared once with [`config_section!`]; the macro yields its struct, its
//! `Default`, its reader and its documentation rows, so a field can never be documented with a
//! default it does not have, or read under a name the reference does not show.

use std::path::{Path, PathBuf};

use super::error::{ConfigError, ErrorKind};
use super::source::ConfigSource;

/// How a value is written back as TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Render {
    /// As it is (documentation of defaults, the example file).
    Plain,
    /// With passwords in URLs masked (output of a loaded config). Secrets themselves are never
    /// kept in a form that could be rendered.
    Redacted,
}

/// A type a config field can have.
pub(crate) trait Setting: Sized {
    /// The type's name in the reference ("integer", "string", ...).
    const TYPE: &'static str;
    /// True when an environment override's text is the value itself (strings); false when the
    /// text is parsed as a TOML value (integers, arrays).
    const ENV_IS_TEXT: bool;

    /// The value from TOML, or `None` after reporting every mistake in it to `cx`.
    fn parse(value: &toml::Value, cx: &mut FieldCx<'_>) -> Option<Self>;

    /// The value as a TOML literal; `None` when there is no value to show (an empty key list).
    fn render(&self, mode: Render) -> Option<String>;

    /// What values the type admits, for the reference, when the type itself restricts them.
    fn allowed() -> Option<String> {
        None
    }
}

/// A mistake found by a [`Rule`].
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl Problem {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Problem {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// A constraint on a field's value beyond its type (a range, a URL scheme).
pub(crate) trait Rule<T> {
    /// `Ok` when `value` satisfies the rule.
    fn check(&self, value: &T) -> Result<(), Problem>;
    /// The constraint in words, for the reference ("0 to 300").
    fn describe(&self) -> String;
}

/// Reads secret files named by the config: through the [`ConfigSource`], relative to the config
/// file's directory when there is one.
pub(crate) struct Files<'a> {
    pub(crate) source: &'a dyn ConfigSource,
    pub(crate) base: Option<&'a Path>,
}

impl Files<'_> {
    /// The path a config value names, resolved against the config file's directory.
    pub(crate) fn resolve(&self, path: &str) -> PathBuf {
        match self.base {
            Some(base) if Path::new(path).is_relative() => base.join(path),
            _ => PathBuf::from(path),
        }
    }
}

/// Where one field's mistakes go, and what a field parser may read.
pub(crate) struct FieldCx<'a> {
    path: String,
    env_var: Option<&'a str>,
    errors: &'a mut Vec<ConfigError>,
    pub(crate) files: &'a Files<'a>,
}

impl FieldCx<'_> {
    /// Records a mistake in the field itself.
    pub(crate) fn report(&mut self, problem: Problem) {
        self.report_at("", problem);
    }

    /// Records a mistake in a part of the field; `suffix` is appended to the field's path
    /// (`"[0].kid"`).
    pub(crate) fn report_at(&mut self, suffix: &str, problem: Problem) {
        self.errors.push(ConfigError {
            path: format!("{}{suffix}", self.path),
            kind: problem.kind,
            message: problem.message,
            hint: problem.hint,
            env_var: self.env_var.map(str::to_owned),
        });
    }

    /// Records a value of the wrong TOML type.
    pub(crate) fn wrong_type(&mut self, suffix: &str, expected: &str, found: &toml::Value) {
        self.report_at(
            suffix,
            Problem::new(
                ErrorKind::WrongType,
                format!("expected {expected}, found {}", found.type_str()),
            ),
        );
    }
}

/// One environment override, already matched to its field.
#[derive(Debug)]
pub(crate) struct EnvOverride {
    pub(crate) var: String,
    pub(crate) text: String,
}

/// Reads the fields of one section.
pub(crate) struct SectionReader<'a> {
    pub(crate) section: &'static str,
    pub(crate) table: Option<&'a toml::Table>,
    pub(crate) env: &'a std::collections::HashMap<String, EnvOverride>,
    pub(crate) errors: &'a mut Vec<ConfigError>,
    pub(crate) files: &'a Files<'a>,
}

impl SectionReader<'_> {
    /// The field's value: its environment override, else its value in the file, else
    /// `default`; then every rule is checked (defaults too: a default that breaks its own rule
    /// fails the "empty file loads" test). On a mistake the default is returned and the mistake
    /// recorded: the caller discards the whole config when there is any.
    pub(crate) fn field<T: Setting>(
        &mut self,
        key: &'static str,
        default: T,
        rules: &[&dyn Rule<T>],
    ) -> T {
        let path = format!("{}.{key}", self.section);
        let env = self.env.get(&path);
        let mut cx = FieldCx {
            path,
            env_var: env.map(|e| e.var.as_str()),
            errors: &mut *self.errors,
            files: self.files,
        };
        let from_env;
        let raw = match env {
            Some(env) => match env_value::<T>(&env.text) {
                Some(value) => {
                    from_env = value;
                    Some(&from_env)
                }
                None => {
                    // The text is not echoed: it may be a secret.
                    cx.report(
                        Problem::new(
                            ErrorKind::WrongType,
                            format!("is not a TOML {} value", T::TYPE),
                        )
                        .hint(format!("see `{}` in docs/configuration.md", env.var)),
                    );
                    return default;
                }
            },
            None => self.table.and_then(|table| table.get(key)),
        };
        let value = match raw {
            Some(raw) => match T::parse(raw, &mut cx) {
                Some(value) => value,
                None => return default,
            },
            None => default,
        };
        for rule in rules {
            if let Err(problem) = rule.check(&value) {
                cx.report(problem);
            }
        }
        value
    }
}

/// An environment override's text as a TOML value of the field's type.
fn env_value<T: Setting>(text: &str) -> Option<toml::Value> {
    if T::ENV_IS_TEXT {
        Some(toml::Value::String(text.to_owned()))
    } else {
        text.trim().parse::<toml::Value>().ok()
    }
}

/// One row of the reference.
#[derive(Debug, Clone)]
pub(crate) struct FieldDoc {
    pub(crate) key: &'static str,
    pub(crate) ty: &'static str,
    /// The default as a TOML literal; `None` for a field without one.
    pub(crate) default: Option<String>,
    pub(crate) doc: &'static str,
    pub(crate) allowed: Vec<String>,
    /// A sample value (TOML literal) for a field without a default, for the example file.
    pub(crate) example: Option<&'static str>,
}

/// One section of the reference.
#[derive(Debug, Clone)]
pub(crate) struct SectionDoc {
    pub(crate) name: &'static str,
    pub(crate) about: &'static str,
    pub(crate) fields: Vec<FieldDoc>,
}

/// What every section declared with [`config_section!`] provides.
pub(crate) trait Section: Default {
    /// The section's name in the file (`store` for `[store]`).
    const NAME: &'static str;
    /// Its field names, in declaration order.
    const KEYS: &'static [&'static str];
    /// Reads every field (the caller has already refused unknown keys).
    fn read(reader: &mut SectionReader<'_>) -> Self;
    /// Its reference: fields, types, defaults, constraints.
    fn docs() -> SectionDoc;
    /// Its fields as (key, TOML literal), `None` for a field with nothing to show.
    fn values(&self, mode: Render) -> Vec<(&'static str, Option<String>)>;
}

/// The environment variable that overrides `section.key`.
pub(crate) fn env_name(section: &str, key: &str) -> String {
    format!(
        "FCTF_{}__{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// A doc comment's text as one paragraph: the lines `///` produced, trimmed and joined.
pub(crate) fn doc_text(doc: &str) -> String {
    doc.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` as a TOML basic string.
pub(crate) fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The candidate closest to `word` when it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Reports every key of `table` that is not in `known`, with a "did you mean" when one is close.
pub(crate) fn check_keys(
    path: &str,
    table: &toml::Table,
    known: &[&'static str],
    errors: &mut Vec<ConfigError>,
) {
    for key in table.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let what = if path.is_empty() { "section" } else { "key" };
        let mut error = ConfigError::new(full, ErrorKind::UnknownKey, format!("unknown {what}"));
        error.hint = Some(match closest(key, known.iter().copied()) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("known: {}", known.join(", ")),
        });
        errors.push(error);
    }
}

/// Declares one config section: its struct, `Default`, reader, reference rows and writer.
///
/// ```text
/// config_section! {
///     /// What the section is for (the reference shows this text).
///     pub struct StoreConfig in "store" {
///         /// What the field means (the reference and the example file show this text).
///         timeout_ms: u64 = 500, check Range(1, 60_000);
///         /// A field without a default shows a sample in the example file.
///         keys: Vec<KeyEntry<TokenKey>> = Vec::new(), example "[{ kid = \"k1\" }]";
///     }
/// }
/// ```
macro_rules! config_section {
    (
        $(#[doc = $about:literal])*
        $vis:vis struct $name:ident in $section:literal {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $default:expr
                    $(, check $rule:expr)?
                    $(, example $example:literal)?
                ;
            )*
        }
    ) => {
        $(#[doc = $about])*
        #[doc = ""]
        #[doc = concat!(
            "The `[", $section, "]` section. Every field's type, default and environment ",
            "variable are in `docs/configuration.md`."
        )]
        #[derive(Clone, Debug)]
        $vis struct $name {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl $crate::config::schema::Section for $name {
            const NAME: &'static str = $section;
            const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn read(reader: &mut $crate::config::schema::SectionReader<'_>) -> Self {
                let defaults = Self::default();
                Self {
                    $(
                        $field: reader.field(
                            stringify!($field),
                            defaults.$field,
                            &[$(&$rule)?],
                        ),
                    )*
                }
            }

            fn docs() -> $crate::config::schema::SectionDoc {
                use $crate::config::schema::{Render, Rule, Setting};
                let defaults = Self::default();
                $crate::config::schema::SectionDoc {
                    name: $section,
                    about: concat!($($about, "\n",)*),
                    fields: vec![$(
                        $crate::config::schema::FieldDoc {
                            key: stringify!($field),
                            ty: <$ty as Setting>::TYPE,
                            default: Setting::render(&defaults.$field, Render::Plain),
                            doc: concat!($($doc, "\n",)*),
                            allowed: {
                                #[allow(unused_mut)] // only fields with a rule push
                                let mut allowed: Vec<String> =
                                    <$ty as Setting>::allowed().into_iter().collect();
                                $( allowed.push(Rule::<$ty>::describe(&$rule)); )?
                                allowed
                            },
                            example: None::<&'static str> $( .or(Some($example)) )?,
                        },
                    )*],
                }
            }

            fn values(
                &self,
                mode: $crate::config::schema::Render,
            ) -> Vec<(&'static str, Option<String>)> {
                use $crate::config::schema::Setting;
                vec![$( (stringify!($field), Setting::render(&self.$field, mode)), )*]
            }
        }
    };
}

pub(crate) use config_section;
