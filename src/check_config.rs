//! `fctf check-config`: every mistake of a config file at once, or "ok".

use anyhow::anyhow;
use std::path::Path;

use fctf_core::config::{self, Config, ConfigErrors, KeyEntry, KeyOrigin, ProcessSource};

use crate::cli::CheckConfigArgs;
use crate::outcome::{self, Exit, Failure, OrExit as _};

/// Checks the file (with the process's `FCTF_*` overrides): exit 0 with a summary, or every
/// mistake on standard error, one per line, and exit 64.
pub fn run(args: &CheckConfigArgs) -> Result<Exit, Failure> {
    let path = args
        .path()
        .ok_or_else(|| anyhow!("checking a config: no file given (FILE or -c FILE)"))
        .or_exit(Exit::InvalidInput)?;
    match config::load_file(path, &ProcessSource) {
        Ok(config) => {
            let mut text = format!("ok: {} ({})\n", path.display(), summary(&config));
            if args.print {
                text.push_str(&config.redacted_toml());
            }
            outcome::write_stdout(&text)?;
            Ok(Exit::Ok)
        }
        Err(errors) => {
            eprintln!("{}", mistakes(path, &errors));
            Ok(Exit::InvalidInput)
        }
    }
}

/// Every mistake, one per line, then a line that counts them.
pub fn mistakes(path: &Path, errors: &ConfigErrors) -> String {
    let count = errors.len();
    let mut text = String::new();
    for error in errors {
        text.push_str(&format!("{error}\n"));
    }
    text.push_str(&format!(
        "{}: {count} mistake{}; see docs/configuration.md",
        path.display(),
        if count == 1 { "" } else { "s" }
    ));
    text
}

/// One line saying what the config selects.
fn summary(config: &Config) -> String {
    format!(
        "store {}, queue {}, database {}, token keys {}, signing keys {}",
        config.store.backend,
        config.queue.backend,
        config.database.url,
        key_list(&config.tokens.keys, &config.tokens.active_kid),
        key_list(&config.signing.keys, &config.signing.active_kid),
    )
}

/// `k1 (active), k0`, or `generated` for the embedded default's per-process keys.
fn key_list<K>(keys: &[KeyEntry<K>], active: &str) -> String {
    if keys.iter().all(|k| *k.origin() == KeyOrigin::Generated) {
        return "generated at start".to_owned();
    }
    keys.iter()
        .map(|k| {
            if k.kid() == active {
                format!("{} (active)", k.kid())
            } else {
                k.kid().to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
