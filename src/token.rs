//! `fctf token mint` and `fctf token verify`: the token format from the command line, for
//! operators and for scripts that test a gateway.

use std::io::{BufRead as _, Read as _};
use std::path::Path;

use anyhow::{Context as _, anyhow};
use fctf_core::clock::unix_now_secs;
use fctf_core::config::{ConfigSource as _, ProcessSource};
use fctf_core::ids::{ChallengeId, TeamId};
use fctf_core::token::{self, Claims, Keyring, MAX_TOKEN_LEN, TokenKey, Verifier};

use crate::cli::{MintArgs, TokenCommand, VerifyArgs};
use crate::outcome::{self, Exit, Failure, OrExit as _};

pub fn run(command: TokenCommand) -> Result<Exit, Failure> {
    match command {
        TokenCommand::Mint(args) => mint(args),
        TokenCommand::Verify(args) => verify(&args),
    }
}

/// Mints a token for the claims given and prints it.
fn mint(args: MintArgs) -> Result<Exit, Failure> {
    let key = read_key(&args.key_file, &args.kid)?;
    let iat = unix_now_secs();
    let claims = Claims {
        kid: args.kid,
        team: TeamId(args.team),
        challenge: ChallengeId(args.challenge),
        instance: args.instance.unwrap_or_default(),
        route: args.route,
        iat,
        exp: iat.saturating_add(args.ttl),
    };
    let token = token::mint(&key, &claims)
        .context("minting the token")
        .or_exit(Exit::InvalidInput)?;
    outcome::write_stdout(&format!("{token}\n"))?;
    Ok(Exit::Ok)
}

/// Verifies a token now: its claims as JSON and exit 0, or the reason on standard error and
/// exit 1.
fn verify(args: &VerifyArgs) -> Result<Exit, Failure> {
    let key = read_key(&args.key_file, &args.kid)?;
    let keyring = Keyring::new(vec![key])
        .context("building the keyring")
        .or_exit(Exit::InvalidInput)?;
    let verifier = Verifier::new(keyring, std::time::Duration::from_secs(args.skew));
    let token = match args.token.as_deref() {
        None | Some("-") => read_token_line()?,
        Some(token) => token.to_owned(),
    };
    match verifier.verify(&token, unix_now_secs()) {
        Ok(claims) => {
            let json = serde_json::to_string(&claims)
                .context("printing the claims")
                .or_exit(Exit::Io)?;
            outcome::write_stdout(&format!("{json}\n"))?;
            Ok(Exit::Ok)
        }
        Err(error) => {
            eprintln!("refused: {} ({})", error.reason(), error.kind());
            Ok(Exit::Refused)
        }
    }
}

/// The key in `path`, named `kid`.
fn read_key(path: &Path, kid: &str) -> Result<TokenKey, Failure> {
    // Through the config source, whose reads are bounded: a wrong path to a device fails fast.
    let contents = ProcessSource
        .read_file(path)
        .with_context(|| format!("reading key file {}", path.display()))
        .or_exit(Exit::InvalidInput)?;
    TokenKey::from_file_contents(kid, &contents)
        .with_context(|| format!("using key file {}", path.display()))
        .or_exit(Exit::InvalidInput)
}

/// One token from standard input: the first line, without its line ending.
fn read_token_line() -> Result<String, Failure> {
    let mut line = String::new();
    // A line longer than any acceptable token is read only far enough to be refused as too long.
    std::io::stdin()
        .lock()
        .take(MAX_TOKEN_LEN as u64 + 2)
        .read_line(&mut line)
        .context("reading the token from standard input")
        .or_exit(Exit::InvalidInput)?;
    let token = line.trim_end_matches(['\r', '\n']);
    if token.is_empty() {
        return Err(anyhow!(
            "reading the token: standard input is empty (pass the token as an argument, or pipe it)"
        ))
        .or_exit(Exit::InvalidInput);
    }
    Ok(token.to_owned())
}
