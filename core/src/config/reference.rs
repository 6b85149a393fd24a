//! The configuration reference (`docs/configuration.md`) and the example file
//! (`fctf.example.toml`), both generated from the section declarations so they cannot drift.

use super::schema::{FieldDoc, doc_text, env_name};
use super::{ENV_NOT_CONFIG, section_docs};

/// Width the example file's comments are wrapped to.
const WRAP: usize = 100;

/// The configuration reference in Markdown: every section, and for every field its type,
/// default, environment variable, constraint and description. `docs/configuration.md` is exactly
/// this text (a test compares them); `fctf config-docs` prints it.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# Configuration reference

<!-- Generated from core/src/config/sections.rs: do not edit. A test compares this file with
the code; after changing a field run `fctf config-docs > docs/configuration.md`. -->

FCTF reads one TOML file per deployment, given to every role with `-c/--config`; check one with
`fctf check-config FILE`. [`fctf.example.toml`](../fctf.example.toml) lists every field with its
default and description.

- **Defaults.** Every field has a default except the key lists, and a missing section means all
  of its defaults. An empty file is the *embedded default* that `fctf up` runs: in-process state
  store and queue and a SQLite file, all in one process.
- **Environment overrides.** Each field can be set by the variable
  `{prefix}<SECTION>__<FIELD>` (upper case, two underscores between section and field), which
  wins over the file: `FCTF_STORE__REDIS_URL=redis://10.0.0.5:6379`. Strings, URLs and paths are
  taken as they are; integers and key lists are TOML values
  (`FCTF_TOKENS__KEYS='[{{ kid = \"k2\", secret_file = \"/run/secrets/k2\" }}]'`). An `FCTF_`
  variable that names no field is a mistake, so a typo is never silently ignored; only
  {not_config} variables (the test suite's) are exempt.
- **Every mistake at once.** Unknown keys (with a \"did you mean\"), wrong types, out-of-range
  numbers, malformed URLs, unreadable or short secret files, an `active_kid` that names no key:
  all are reported together, one per line, as `<key.path>: <what is wrong> (<hint>)`.
- **Keys and secrets.** `tokens.keys` and `signing.keys` hold `{{ kid, secret_file }}` tables
  (or `{{ kid, secret }}`, inline, discouraged). A secret file holds at least 32 bytes; trailing
  whitespace (the final newline) is not part of the secret. Make one with
  `head -c 32 /dev/urandom | base64 > token-k1.key`. A relative `secret_file` is relative to the
  config file's directory. Secrets never appear in logs, errors or `check-config --print`, and
  passwords in URLs are masked there.
- **Keys in the embedded default.** When `store.backend` and `queue.backend` are both `memory`,
  absent key lists are filled with a random key per start (tokens then last until a restart).
  Otherwise several processes must share the keys, and the key lists are required.

## Checking a file

`fctf check-config FILE` (or `fctf check-config -c FILE`) applies the environment overrides too,
then prints `ok: FILE` and a one-line summary and exits 0, or prints every mistake to standard
error and exits 64. An unreadable file, or one that is not valid TOML (reported with its line and
column), also exits 64. `--print` also prints the config in force, secrets redacted.
",
        prefix = super::ENV_PREFIX,
        not_config = ENV_NOT_CONFIG
            .iter()
            .map(|p| format!("`{p}*`"))
            .collect::<Vec<_>>()
            .join(", "),
    ));

    for section in section_docs() {
        out.push_str(&format!(
            "\n## `[{}]`\n\n{}\n\n",
            section.name,
            doc_text(section.about)
        ));
        out.push_str("| Key | Type | Default | Environment variable | Description |\n");
        out.push_str("| --- | --- | --- | --- | --- |\n");
        for field in &section.fields {
            let default = match &field.default {
                Some(value) => format!("`{value}`"),
                None => "none".to_owned(),
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | `{}` | {} |\n",
                field.key,
                field.ty,
                cell(&default),
                env_name(section.name, field.key),
                cell(&description(field)),
            ));
        }
    }
    out
}

/// The example config file: every section and field with its description and default (fields
/// without a default as a commented sample). `fctf.example.toml` is exactly this text (a test
/// compares them, and loads it); `fctf config-docs --example` prints it.
pub fn example_toml() -> String {
    let mut out = String::new();
    wrap_comment(
        &mut out,
        "fctf.example.toml: every config field with its default. Generated from the code by \
         `fctf config-docs --example`; the reference, with types and environment variables, is \
         docs/configuration.md. An empty file means exactly these values (the embedded default \
         that `fctf up` runs): a real config sets only what it changes.",
    );
    for section in section_docs() {
        out.push('\n');
        wrap_comment(&mut out, &doc_text(section.about));
        out.push_str(&format!("[{}]\n", section.name));
        for field in &section.fields {
            out.push('\n');
            wrap_comment(&mut out, &description(field));
            match (&field.default, field.example) {
                (Some(value), _) => out.push_str(&format!("{} = {value}\n", field.key)),
                (None, Some(example)) => out.push_str(&format!("# {} = {example}\n", field.key)),
                (None, None) => out.push_str(&format!("# {} =\n", field.key)),
            }
        }
    }
    out
}

/// A field's description with its constraints.
fn description(field: &FieldDoc) -> String {
    let mut text = doc_text(field.doc);
    if !field.allowed.is_empty() {
        text.push_str(&format!(" Allowed: {}.", field.allowed.join("; ")));
    }
    text
}

/// `text` made safe for one Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// `text` as `# ` comment lines of at most [`WRAP`] characters. A `code span` is never broken,
/// and a word or span longer than a line gets a line of its own.
fn wrap_comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in unbreakable_words(text) {
        if line.len() > 1 && line.len() + 1 + word.len() > WRAP {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(&word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// The words of `text`, with the words of each `code span` joined into one.
fn unbreakable_words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut in_code = false;
    for word in text.split_whitespace() {
        match words.last_mut() {
            Some(last) if in_code => {
                last.push(' ');
                last.push_str(word);
            }
            _ => words.push(word.to_owned()),
        }
        // An odd number of backticks opens or closes a span.
        if word.matches('`').count() % 2 == 1 {
            in_code = !in_code;
        }
    }
    words
}
