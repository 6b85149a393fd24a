//! `fctf token mint | fctf token verify`, and each way a token is refused.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use super::{SECRET, Scratch, assert_exit, fctf, run, stderr, stdout};

/// `token mint --key-file key --team team --challenge challenge --route route`, then `extra`.
fn mint_args<'a>(
    key: &'a str,
    team: &'a str,
    challenge: &'a str,
    route: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "token",
        "mint",
        "--key-file",
        key,
        "--team",
        team,
        "--challenge",
        challenge,
        "--route",
        route,
    ];
    args.extend_from_slice(extra);
    args
}

/// Mints a token with `key` and extra args; returns it without the newline.
fn mint(key: &str, extra: &[&str]) -> String {
    let output = run(&mint_args(key, "7", "3", "127.0.0.1:4000", extra));
    assert_exit(&output, 0);
    let out = stdout(&output);
    assert!(out.ends_with('\n') && out.lines().count() == 1, "{out:?}");
    out.trim_end().to_owned()
}

#[test]
fn mint_piped_into_verify_round_trips() {
    let scratch = Scratch::new();
    let key = scratch.file("k1.key", &format!("{SECRET}\n"));
    let key = key.to_str().unwrap();
    let instance = "0123456789abcdef0123456789abcdef";

    let mut minter = fctf()
        .args(mint_args(
            key,
            "-1",
            "3",
            "team-shared-3-web-1700000000",
            &["--instance", instance, "--ttl", "600"],
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let verified = fctf()
        .args(["token", "verify", "--key-file", key, "-"])
        .stdin(Stdio::from(minter.stdout.take().unwrap()))
        .output()
        .unwrap();
    assert!(minter.wait().unwrap().success());
    assert_exit(&verified, 0);

    let claims: serde_json::Value = serde_json::from_str(&stdout(&verified)).unwrap();
    assert_eq!(claims["kid"], "k1");
    assert_eq!(claims["team"], -1);
    assert_eq!(claims["challenge"], 3);
    assert_eq!(claims["instance"], instance);
    assert_eq!(claims["route"], "team-shared-3-web-1700000000");
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 600);
}

#[test]
fn a_token_as_an_argument_or_without_one_reads_stdin() {
    let scratch = Scratch::new();
    let key = scratch.file("k1.key", SECRET);
    let key = key.to_str().unwrap();
    let token = mint(key, &[]);

    let output = run(&["token", "verify", "--key-file", key, &token]);
    assert_exit(&output, 0);

    let mut child = fctf()
        .args(["token", "verify", "--key-file", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\r\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 0);
    assert!(stdout(&output).contains("\"team\":7"));
}

#[test]
fn a_tampered_token_is_refused() {
    let scratch = Scratch::new();
    let key = scratch.file("k1.key", SECRET);
    let key = key.to_str().unwrap();
    let token = mint(key, &[]);

    // Another tag: still well-formed, so the MAC check is what refuses it.
    let (payload, tag) = token.split_once('.').unwrap();
    let first = if tag.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{payload}.{first}{}", &tag[1..]);
    let output = run(&["token", "verify", "--key-file", key, &tampered]);
    assert_exit(&output, 1);
    assert_eq!(stderr(&output), "refused: invalid token (bad_signature)\n");
    assert!(output.stdout.is_empty());

    // A token signed with another secret under the same key id.
    let other = scratch.file("other.key", &SECRET.replace('m', "n"));
    let forged = mint(other.to_str().unwrap(), &[]);
    let output = run(&["token", "verify", "--key-file", key, &forged]);
    assert_exit(&output, 1);
    assert!(stderr(&output).contains("(bad_signature)"));

    let output = run(&["token", "verify", "--key-file", key, "not-a-token"]);
    assert_exit(&output, 1);
    assert_eq!(stderr(&output), "refused: invalid token (malformed)\n");
}

#[test]
fn an_expired_token_is_refused() {
    let scratch = Scratch::new();
    let key = scratch.file("k1.key", SECRET);
    let key = key.to_str().unwrap();
    let token = mint(key, &["--ttl", "0"]);
    // exp = now at minting; one whole second later it is past exp with no skew.
    std::thread::sleep(Duration::from_millis(1100));
    let output = run(&["token", "verify", "--key-file", key, "--skew", "0", &token]);
    assert_exit(&output, 1);
    assert_eq!(stderr(&output), "refused: token expired (expired)\n");

    // The default skew still accepts it.
    assert_exit(&run(&["token", "verify", "--key-file", key, &token]), 0);
}

#[test]
fn a_token_of_an_unknown_key_id_is_refused() {
    let scratch = Scratch::new();
    let key = scratch.file("k1.key", SECRET);
    let key = key.to_str().unwrap();
    let token = mint(key, &["--kid", "k2"]);
    let output = run(&["token", "verify", "--key-file", key, &token]);
    assert_exit(&output, 1);
    assert_eq!(stderr(&output), "refused: invalid token (unknown_key)\n");
    assert_exit(
        &run(&["token", "verify", "--key-file", key, "--kid", "k2", &token]),
        0,
    );
}

#[test]
fn unusable_keys_and_inputs_exit_64() {
    let scratch = Scratch::new();
    let short = scratch.file("short.key", "too short\n");
    let output = run(&mint_args(short.to_str().unwrap(), "1", "1", "r", &[]));
    assert_exit(&output, 64);
    assert!(
        stderr(&output).starts_with("error: using key file"),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("is 9 bytes; at least 32 are required"));

    let output = run(&["token", "verify", "--key-file", "/nonexistent.key", "x"]);
    assert_exit(&output, 64);
    assert!(stderr(&output).starts_with("error: reading key file /nonexistent.key: "));

    let key = scratch.file("k1.key", SECRET);
    let output = run(&mint_args(
        key.to_str().unwrap(),
        "1",
        "1",
        "no spaces allowed",
        &[],
    ));
    assert_exit(&output, 64);
    assert!(stderr(&output).starts_with("error: minting the token: route must be"));

    let output = fctf()
        .args(["token", "verify", "--key-file", key.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit(&output, 64);
    assert!(stderr(&output).contains("standard input is empty"));

    let output = run(&mint_args(
        key.to_str().unwrap(),
        "1",
        "1",
        "r",
        &["--instance", "NOT-HEX"],
    ));
    assert_exit(&output, 2);
}
