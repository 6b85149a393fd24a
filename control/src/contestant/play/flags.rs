//! Flag matching: static flags (exact or case-insensitive), regex flags (bounded pattern size,
//! compiled size and input size; the `regex` crate matches in linear time, so a hostile pattern
//! or submission cannot stall a request), and per-team dynamic flags for instance challenges
//! (an HMAC of the team and challenge under a secret kept in the database, `FCTF{...}`).
//!
//! Normalisation is exactly this: surrounding whitespace of the submission is trimmed, nothing
//! else. Static comparisons are constant-time.

use hmac::{Hmac, KeyInit, Mac};
use regex::RegexBuilder;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Longest submission evaluated (bytes after trimming); longer ones are simply wrong.
pub const MAX_SUBMISSION_BYTES: usize = 1024;
/// Longest regex flag pattern an admin may store.
pub const MAX_PATTERN_BYTES: usize = 512;
/// Compiled-program budget of one regex flag (bytes), so a small pattern cannot expand into a
/// huge automaton (`a{1000}{1000}`).
pub const MAX_COMPILED_BYTES: usize = 256 * 1024;

/// How one stored flag compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    Static,
    Regex,
}

impl FlagKind {
    /// Reads CTFd's `type` word.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "static" => Some(Self::Static),
            "regex" => Some(Self::Regex),
            _ => None,
        }
    }

    /// CTFd's `type` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Regex => "regex",
        }
    }
}

/// One stored flag: CTFd's `type`, `content` and `data` (`"case_insensitive"` or empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagRule {
    pub kind: FlagKind,
    pub content: String,
    pub case_insensitive: bool,
}

/// Why an admin's flag is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("the flag is empty")]
    Empty,
    #[error("the regex is longer than {MAX_PATTERN_BYTES} bytes")]
    PatternTooLong,
    #[error("the regex is invalid or too complex: {0}")]
    BadPattern(String),
}

impl FlagRule {
    /// Checks that the rule can be stored (regex compiles within the budget).
    pub fn validate(&self) -> Result<(), FlagError> {
        if self.content.trim().is_empty() {
            return Err(FlagError::Empty);
        }
        if self.kind == FlagKind::Regex {
            compile(&self.content, self.case_insensitive)?;
        }
        Ok(())
    }

    /// True when `submission` (already trimmed) matches this rule. A regex that no longer
    /// compiles matches nothing.
    pub fn matches(&self, submission: &str) -> bool {
        if submission.len() > MAX_SUBMISSION_BYTES {
            return false;
        }
        match self.kind {
            FlagKind::Static => {
                let expected = self.content.trim();
                if self.case_insensitive {
                    constant_time_eq(&expected.to_lowercase(), &submission.to_lowercase())
                } else {
                    constant_time_eq(expected, submission)
                }
            }
            FlagKind::Regex => match compile(&self.content, self.case_insensitive) {
                Ok(re) => re.is_match(submission),
                Err(_) => false,
            },
        }
    }
}

/// A rule ready to match many submissions: a regex flag is compiled once, not per submission
/// (what the submission path's cache holds).
#[derive(Clone, Debug)]
pub struct Matcher {
    rule: FlagRule,
    /// The compiled pattern of a regex rule; `None` for a static rule or a regex that no longer
    /// compiles (which matches nothing, as [`FlagRule::matches`]).
    regex: Option<regex::Regex>,
}

impl Matcher {
    /// Compiles `rule`.
    pub fn new(rule: FlagRule) -> Self {
        let regex = match rule.kind {
            FlagKind::Regex => compile(&rule.content, rule.case_insensitive).ok(),
            FlagKind::Static => None,
        };
        Self { rule, regex }
    }

    /// Exactly [`FlagRule::matches`] of the rule it was made from.
    pub fn matches(&self, submission: &str) -> bool {
        if submission.len() > MAX_SUBMISSION_BYTES {
            return false;
        }
        match self.rule.kind {
            FlagKind::Static => self.rule.matches(submission),
            FlagKind::Regex => self
                .regex
                .as_ref()
                .is_some_and(|re| re.is_match(submission)),
        }
    }
}

/// Compiles a regex flag anchored at both ends (CTFd uses `re.match(f"^{content}$")`).
fn compile(pattern: &str, case_insensitive: bool) -> Result<regex::Regex, FlagError> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(FlagError::PatternTooLong);
    }
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .case_insensitive(case_insensitive)
        .size_limit(MAX_COMPILED_BYTES)
        .dfa_size_limit(MAX_COMPILED_BYTES)
        .nest_limit(64)
        .build()
        .map_err(|e| FlagError::BadPattern(first_line(&e.to_string())))
}

fn first_line(s: &str) -> String {
    s.lines()
        .last()
        .unwrap_or("")
        .trim()
        .chars()
        .take(200)
        .collect()
}

/// The submission as compared: surrounding whitespace trimmed.
pub fn normalise(submission: &str) -> &str {
    submission.trim()
}

/// Equality that takes the same time wherever the first difference is (the length still shows).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The dynamic flag of `team` for `challenge` under `secret`: `FCTF{` + 32 hex digits + `}`.
pub fn team_flag(secret: &[u8], team: i64, challenge: i64) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(b"fctf-team-flag\0");
    mac.update(&team.to_be_bytes());
    mac.update(&challenge.to_be_bytes());
    let tag = mac.finalize().into_bytes();
    format!("FCTF{{{}}}", hex::encode(&tag[..16]))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rule(kind: FlagKind, content: &str, ci: bool) -> FlagRule {
        FlagRule {
            kind,
            content: content.to_owned(),
            case_insensitive: ci,
        }
    }

    #[test]
    fn static_flags_compare_exactly_or_without_case() {
        let exact = rule(FlagKind::Static, "flag{Abc}", false);
        assert!(exact.matches("flag{Abc}"));
        assert!(!exact.matches("flag{abc}"));
        assert!(!exact.matches("flag{Abc} "));
        let ci = rule(FlagKind::Static, "flag{Abc}", true);
        assert!(ci.matches("FLAG{aBC}"));
        assert!(!ci.matches("flag{abd}"));
        assert_eq!(normalise("  flag{x}\n"), "flag{x}");
    }

    #[test]
    fn regex_flags_are_anchored_and_bounded() {
        let re = rule(FlagKind::Regex, r"flag\{[0-9]+\}", false);
        assert!(re.matches("flag{123}"));
        assert!(!re.matches("xflag{123}"));
        assert!(!re.matches("flag{123}x"));
        assert!(!re.matches("FLAG{123}"));
        assert!(rule(FlagKind::Regex, r"flag\{[0-9]+\}", true).matches("FLAG{1}"));
        // An alternation cannot escape the anchors.
        assert!(!rule(FlagKind::Regex, "a|b", false).matches("ab"));
        // Too long, invalid and too complex patterns are refused at authoring time.
        let long = "a".repeat(MAX_PATTERN_BYTES + 1);
        assert_eq!(
            rule(FlagKind::Regex, &long, false).validate(),
            Err(FlagError::PatternTooLong)
        );
        assert!(matches!(
            rule(FlagKind::Regex, "(", false).validate(),
            Err(FlagError::BadPattern(_))
        ));
        assert!(matches!(
            rule(FlagKind::Regex, "(a{1000}){1000}", false).validate(),
            Err(FlagError::BadPattern(_))
        ));
        // Catastrophic-backtracking patterns of other engines run in linear time here.
        let evil = rule(FlagKind::Regex, "(a+)+$", false);
        assert!(!evil.matches(&format!("{}!", "a".repeat(1000))));
        // Oversized submissions are wrong without being evaluated.
        assert!(!rule(FlagKind::Regex, ".*", false).matches(&"a".repeat(MAX_SUBMISSION_BYTES + 1)));
    }

    #[test]
    fn a_matcher_decides_as_its_rule() {
        let cases = [
            rule(FlagKind::Static, "flag{Abc}", false),
            rule(FlagKind::Static, "flag{Abc}", true),
            rule(FlagKind::Regex, r"flag\{[0-9]+\}", false),
            rule(FlagKind::Regex, r"flag\{[0-9]+\}", true),
            rule(FlagKind::Regex, "(", false),
        ];
        let inputs = [
            "flag{Abc}",
            "FLAG{aBC}",
            "flag{123}",
            "FLAG{1}",
            "xflag{1}",
            "(",
            &"a".repeat(MAX_SUBMISSION_BYTES + 1),
        ];
        for r in &cases {
            let m = Matcher::new(r.clone());
            for input in inputs {
                assert_eq!(m.matches(input), r.matches(input), "{r:?} {input:?}");
            }
        }
    }

    #[test]
    fn team_flags_differ_per_team_challenge_and_secret() {
        let a = team_flag(b"secret-one-secret-one-secret-one", 1, 7);
        assert!(a.starts_with("FCTF{") && a.ends_with('}') && a.len() == 38);
        assert_eq!(a, team_flag(b"secret-one-secret-one-secret-one", 1, 7));
        assert_ne!(a, team_flag(b"secret-one-secret-one-secret-one", 2, 7));
        assert_ne!(a, team_flag(b"secret-one-secret-one-secret-one", 1, 8));
        assert_ne!(a, team_flag(b"secret-two-secret-two-secret-two", 1, 7));
    }

    proptest! {
        #[test]
        fn a_static_flag_matches_itself_and_nothing_else(flag in "[ -~]{1,60}", other in "[ -~]{1,60}") {
            let r = rule(FlagKind::Static, flag.trim(), false);
            if !flag.trim().is_empty() {
                prop_assert!(r.matches(normalise(&flag)));
            }
            prop_assert_eq!(r.matches(normalise(&other)), other.trim() == flag.trim());
        }
    }
}
