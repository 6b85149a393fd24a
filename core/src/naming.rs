//! Instance namespace names and their inverse.
//!
//! As in the original system, an instance runs in the namespace
//! `team-<team>-<challenge>-<slug>-<unix>`: `<team>` is the team id, `0` for
//! [`TeamId::PREVIEW`] and `shared` for [`TeamId::SHARED`]; `<slug>` comes from the challenge name;
//! `<unix>` is the start time in seconds. Unlike the original, the name is always a valid
//! DNS-1123 label (what Kubernetes requires of a namespace) for any challenge name: the slug is
//! transliterated to ASCII and shortened to fit 63 characters. The ids are never shortened, so
//! [`parse_namespace`] (used by the Deployment Listener to map a pod's namespace back to its team
//! and challenge) always recovers them.
//!
//! Ids outside the valid domain still produce a valid label, which [`parse_namespace`] refuses:
//! a negative id other than [`TeamId::SHARED`] is written `m<digits>` (`-5` is `m5`), since a
//! `-` would be read as a separator.

use std::fmt::Write as _;

use crate::ids::{ChallengeId, TeamId};

/// The longest DNS-1123 label, and so the longest namespace or Service name.
pub const MAX_LABEL_LEN: usize = 63;

/// The latest start time a name can carry; later times are written as this one.
///
/// 14 digits (the year 3 million) leave room for at least one slug character next to any two
/// `i64` ids within [`MAX_LABEL_LEN`].
pub const MAX_STARTED_UNIX: u64 = 99_999_999_999_999;

/// What every instance namespace starts with.
const PREFIX: &str = "team-";
/// The team part of [`TeamId::SHARED`].
const SHARED: &str = "shared";
/// The slug when the challenge name has nothing usable.
const FALLBACK_SLUG: &str = "chal";
/// Appended by [`service_name`].
const SERVICE_SUFFIX: &str = "-svc";

/// The longest id part: `m` and the 19 digits of `i64::MIN`.
const MAX_ID_LEN: usize = 20;
/// Every name has a slug of at least this many characters.
const MIN_SLUG_LEN: usize = 1;
// "team-<id>-<id>-<slug>-<time>" with the longest ids and time still fits.
const _: () = assert!(
    PREFIX.len()
        + MAX_ID_LEN
        + 1
        + MAX_ID_LEN
        + 1
        + MIN_SLUG_LEN
        + 1
        + decimal_len(MAX_STARTED_UNIX)
        <= MAX_LABEL_LEN
);

/// Why a name is not an instance namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    /// Not a DNS-1123 label: empty, longer than 63, a character outside `[a-z0-9-]`, not starting
    /// with a letter or not ending with a letter or digit.
    #[error("{0:?} is not a DNS-1123 label")]
    NotALabel(String),
    /// A label, but not of the shape `team-<team>-<challenge>-<slug>-<unix>`.
    #[error("{0:?} is not an instance namespace (team-<team>-<challenge>-<slug>-<unix>)")]
    NotAnInstanceNamespace(String),
    /// The team part is not `shared` nor a canonical non-negative decimal `i64`.
    #[error("invalid team id {0:?} in namespace name")]
    InvalidTeam(String),
    /// The challenge part is not a canonical non-negative decimal `i64`.
    #[error("invalid challenge id {0:?} in namespace name")]
    InvalidChallenge(String),
    /// The time part is not a canonical decimal `u64`.
    #[error("invalid start time {0:?} in namespace name")]
    InvalidStartTime(String),
}

/// The ids and start time a namespace name carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParsedNamespace {
    /// The team (possibly [`TeamId::PREVIEW`] or [`TeamId::SHARED`]).
    pub team: TeamId,
    /// The challenge.
    pub challenge: ChallengeId,
    /// The instance's start time, Unix seconds.
    pub started_unix: u64,
}

/// The namespace of the instance of `challenge` that `team` started at `started_unix`:
/// `team-<team>-<challenge>-<slug>-<unix>`, always a DNS-1123 label of at most 63 characters.
///
/// The slug (see [`slug`]) takes whatever room the ids and time leave: at least one character.
/// Times past [`MAX_STARTED_UNIX`] are written as it. Negative ids other than
/// [`TeamId::SHARED`] are written `m<digits>` and refused by [`parse_namespace`].
pub fn namespace_name(
    team: TeamId,
    challenge: ChallengeId,
    challenge_name: &str,
    started_unix: u64,
) -> String {
    let mut name = String::with_capacity(MAX_LABEL_LEN);
    name.push_str(PREFIX);
    if team == TeamId::SHARED {
        name.push_str(SHARED);
    } else {
        push_id(&mut name, team.0);
    }
    name.push('-');
    push_id(&mut name, challenge.0);
    name.push('-');

    let time = started_unix.min(MAX_STARTED_UNIX);
    let time_len = decimal_len(time);
    // What is left for the slug once its dash and the time are written: at least MIN_SLUG_LEN
    // (asserted at compile time).
    let room = MAX_LABEL_LEN - (name.len() + 1 + time_len);
    name.push_str(&slug(challenge_name, room));
    name.push('-');
    write!(name, "{time}").expect("writing to a String cannot fail");
    debug_assert!(is_dns1123_label(&name), "{name:?}");
    name
}

/// Reads the team, challenge and start time back from a name made by [`namespace_name`].
///
/// The slug may hold dashes and digits, so the ids are read from the left and the time from the
/// right. Numbers must be canonical (no sign, no leading zero), so no other spelling of an id
/// maps to the same instance; negative ids other than `shared` are refused.
pub fn parse_namespace(name: &str) -> Result<ParsedNamespace, NamingError> {
    if !is_dns1123_label(name) {
        return Err(NamingError::NotALabel(name.to_owned()));
    }
    let not_ours = || NamingError::NotAnInstanceNamespace(name.to_owned());
    let rest = name.strip_prefix(PREFIX).ok_or_else(not_ours)?;
    let (team_part, rest) = rest.split_once('-').ok_or_else(not_ours)?;
    let (challenge_part, rest) = rest.split_once('-').ok_or_else(not_ours)?;
    let time_part = match rest.rsplit_once('-') {
        Some((slug, time)) if !slug.is_empty() => time,
        _ => return Err(not_ours()),
    };

    let team = if team_part == SHARED {
        TeamId::SHARED
    } else {
        parse_canonical_u64(team_part)
            .and_then(|n| i64::try_from(n).ok())
            .map(TeamId)
            .ok_or_else(|| NamingError::InvalidTeam(team_part.to_owned()))?
    };
    let challenge = parse_canonical_u64(challenge_part)
        .and_then(|n| i64::try_from(n).ok())
        .map(ChallengeId)
        .ok_or_else(|| NamingError::InvalidChallenge(challenge_part.to_owned()))?;
    let started_unix = parse_canonical_u64(time_part)
        .ok_or_else(|| NamingError::InvalidStartTime(time_part.to_owned()))?;
    Ok(ParsedNamespace {
        team,
        challenge,
        started_unix,
    })
}

/// The name of the ClusterIP Service in `namespace`: `<namespace>-svc`.
///
/// A Service name is itself a label of at most 63 characters, so when `<namespace>-svc` would be
/// longer, the namespace part is cut to 59 characters (and any dash at the cut removed) before
/// `-svc` is added. That cannot collide: each instance namespace holds one Service. Every
/// component derives the name with this function, so all of them agree on it. For a `namespace`
/// that is a DNS-1123 label starting with a letter (as [`namespace_name`] makes), the result is
/// one too.
pub fn service_name(namespace: &str) -> String {
    let keep = MAX_LABEL_LEN - SERVICE_SUFFIX.len();
    let base = match namespace.char_indices().nth(keep) {
        Some((cut, _)) => namespace[..cut].trim_end_matches('-'),
        None => namespace,
    };
    let mut name = String::with_capacity(base.len() + SERVICE_SUFFIX.len());
    name.push_str(base);
    name.push_str(SERVICE_SUFFIX);
    name
}

/// A slug of at most `max_len` characters from a challenge name: lowercase ASCII letters, digits
/// and single dashes, neither starting nor ending with a dash.
///
/// ASCII letters are lowercased and common accented Latin letters folded to ASCII (`É` → `e`,
/// `Đ` → `d`, `ß` → `ss`, all of Vietnamese); other letters and combining marks are dropped;
/// anything else (spaces, punctuation, symbols) separates words. The cut falls between whole
/// folded letters. A name with nothing usable gives `chal` (cut to `max_len`).
pub fn slug(name: &str, max_len: usize) -> String {
    let mut out = String::with_capacity(name.len().min(max_len));
    // A separator is written only once a letter follows it: collapses runs, trims both ends.
    let mut pending_dash = false;
    for c in name.chars() {
        let folded = if c.is_ascii_alphanumeric() {
            Folded::Ascii(c.to_ascii_lowercase())
        } else if let Some(ascii) = fold_latin(c) {
            Folded::Str(ascii)
        } else if c.is_ascii() || !(c.is_alphanumeric() || is_combining_mark(c)) {
            pending_dash = true;
            continue;
        } else {
            continue; // a letter we cannot spell in ASCII, or a mark on one
        };
        let needed = folded.len() + usize::from(pending_dash && !out.is_empty());
        if out.len() + needed > max_len {
            break;
        }
        if pending_dash && !out.is_empty() {
            out.push('-');
        }
        pending_dash = false;
        match folded {
            Folded::Ascii(a) => out.push(a),
            Folded::Str(s) => out.push_str(s),
        }
    }
    if out.is_empty() {
        out.push_str(&FALLBACK_SLUG[..FALLBACK_SLUG.len().min(max_len)]);
    }
    out
}

/// One character's ASCII spelling.
enum Folded {
    Ascii(char),
    Str(&'static str),
}

impl Folded {
    fn len(&self) -> usize {
        match self {
            Folded::Ascii(_) => 1,
            Folded::Str(s) => s.len(),
        }
    }
}

/// True for a DNS-1123 label that starts with a letter (so it is an RFC 1035 label too).
fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_LABEL_LEN
                && first.is_ascii_lowercase()
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

/// Writes an id in decimal, a negative one as `m<digits>` (a `-` would read as a separator).
fn push_id(out: &mut String, id: i64) {
    if id < 0 {
        out.push('m');
    }
    write!(out, "{}", id.unsigned_abs()).expect("writing to a String cannot fail");
}

/// Number of decimal digits of `n`.
const fn decimal_len(n: u64) -> usize {
    match n.checked_ilog10() {
        Some(log) => log as usize + 1,
        None => 1,
    }
}

/// A decimal `u64` in its one canonical spelling: digits only, no leading zero (except `0`).
fn parse_canonical_u64(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// Combining diacritical marks: what decomposed (NFD) text puts after a base letter.
fn is_combining_mark(c: char) -> bool {
    matches!(
        c,
        '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE20}'..='\u{FE2F}'
    )
}

/// ASCII spelling of an accented Latin letter, either case: Latin-1, Latin Extended-A and the
/// Vietnamese letters of Latin Extended Additional. `None` for anything else.
///
/// Both cases are listed so the common path needs no Unicode case mapping; a test checks that
/// every uppercase letter folds like its lowercase one.
fn fold_latin(c: char) -> Option<&'static str> {
    let ascii = match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' | 'ǎ' | 'ạ' | 'ả' | 'ấ' | 'ầ' | 'ẩ'
        | 'ẫ' | 'ậ' | 'ắ' | 'ằ' | 'ẳ' | 'ẵ' | 'ặ' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'Ā'
        | 'Ă' | 'Ą' | 'Ǎ' | 'Ạ' | 'Ả' | 'Ấ' | 'Ầ' | 'Ẩ' | 'Ẫ' | 'Ậ' | 'Ắ' | 'Ằ' | 'Ẳ' | 'Ẵ'
        | 'Ặ' => "a",
        'æ' | 'Æ' => "ae",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' | 'Ç' | 'Ć' | 'Ĉ' | 'Ċ' | 'Č' => "c",
        'ď' | 'đ' | 'ð' | 'Ď' | 'Đ' | 'Ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' | 'ẹ' | 'ẻ' | 'ẽ' | 'ế' | 'ề' | 'ể'
        | 'ễ' | 'ệ' | 'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ĕ' | 'Ė' | 'Ę' | 'Ě' | 'Ẹ' | 'Ẻ' | 'Ẽ'
        | 'Ế' | 'Ề' | 'Ể' | 'Ễ' | 'Ệ' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' | 'Ĝ' | 'Ğ' | 'Ġ' | 'Ģ' => "g",
        'ĥ' | 'ħ' | 'Ĥ' | 'Ħ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' | 'ǐ' | 'ỉ' | 'ị' | 'Ì' | 'Í' | 'Î'
        | 'Ï' | 'Ĩ' | 'Ī' | 'Ĭ' | 'Į' | 'Ǐ' | 'Ỉ' | 'Ị' | 'İ' => "i",
        'ĳ' | 'Ĳ' => "ij",
        'ĵ' | 'Ĵ' => "j",
        'ķ' | 'ĸ' | 'Ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' | 'Ĺ' | 'Ļ' | 'Ľ' | 'Ŀ' | 'Ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' | 'ŉ' | 'ŋ' | 'Ñ' | 'Ń' | 'Ņ' | 'Ň' | 'Ŋ' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' | 'ơ' | 'ǒ' | 'ọ' | 'ỏ' | 'ố' | 'ồ'
        | 'ổ' | 'ỗ' | 'ộ' | 'ớ' | 'ờ' | 'ở' | 'ỡ' | 'ợ' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø'
        | 'Ō' | 'Ŏ' | 'Ő' | 'Ơ' | 'Ǒ' | 'Ọ' | 'Ỏ' | 'Ố' | 'Ồ' | 'Ổ' | 'Ỗ' | 'Ộ' | 'Ớ' | 'Ờ'
        | 'Ở' | 'Ỡ' | 'Ợ' => "o",
        'œ' | 'Œ' => "oe",
        'ŕ' | 'ŗ' | 'ř' | 'Ŕ' | 'Ŗ' | 'Ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' | 'ſ' | 'Ś' | 'Ŝ' | 'Ş' | 'Š' => "s",
        'ß' | 'ẞ' => "ss",
        'ţ' | 'ť' | 'ŧ' | 'Ţ' | 'Ť' | 'Ŧ' => "t",
        'þ' | 'Þ' => "th",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' | 'ư' | 'ǔ' | 'ụ' | 'ủ' | 'ứ'
        | 'ừ' | 'ử' | 'ữ' | 'ự' | 'Ù' | 'Ú' | 'Û' | 'Ü' | 'Ũ' | 'Ū' | 'Ŭ' | 'Ů' | 'Ű' | 'Ų'
        | 'Ư' | 'Ǔ' | 'Ụ' | 'Ủ' | 'Ứ' | 'Ừ' | 'Ử' | 'Ữ' | 'Ự' => "u",
        'ŵ' | 'Ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' | 'ỳ' | 'ỵ' | 'ỷ' | 'ỹ' | 'Ý' | 'Ÿ' | 'Ŷ' | 'Ỳ' | 'Ỵ' | 'Ỷ' | 'Ỹ' => {
            "y"
        }
        'ź' | 'ż' | 'ž' | 'Ź' | 'Ż' | 'Ž' => "z",
        _ => return None,
    };
    Some(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_original_shape() {
        assert_eq!(
            namespace_name(TeamId(42), ChallengeId(7), "Web Login", 1_700_000_000),
            "team-42-7-web-login-1700000000"
        );
        assert_eq!(
            namespace_name(TeamId::PREVIEW, ChallengeId(7), "x", 5),
            "team-0-7-x-5"
        );
        assert_eq!(
            namespace_name(TeamId::SHARED, ChallengeId(7), "x", 5),
            "team-shared-7-x-5"
        );
    }

    #[test]
    fn slugs_fold_vietnamese_and_latin_letters() {
        assert_eq!(slug("Đường đến Hà Nội", 63), "duong-den-ha-noi");
        assert_eq!(
            slug("Thử thách: Mật mã học #1", 63),
            "thu-thach-mat-ma-hoc-1"
        );
        assert_eq!(slug("Crème Brûlée", 63), "creme-brulee");
        assert_eq!(slug("Straße Œuvre Ærø", 63), "strasse-oeuvre-aero");
        // Decomposed (NFD) text: the combining marks vanish, the letters stay joined.
        assert_eq!(slug("Cafe\u{301} Lo\u{302}\u{301}i", 63), "cafe-loi");
        assert_eq!(slug("İstanbul", 63), "istanbul");
    }

    #[test]
    fn every_folded_letter_folds_the_same_in_either_case() {
        let latin = ('\u{80}'..='\u{24F}').chain('\u{1E00}'..='\u{1EFF}');
        for c in latin {
            let mut lower = c.to_lowercase();
            if let (Some(l), None) = (lower.next(), lower.next()) {
                assert_eq!(
                    fold_latin(c),
                    fold_latin(l),
                    "{c} ({:04X}) vs {l}",
                    u32::from(c)
                );
            }
        }
        for text in [
            "ẠẮẰẲẴẶẤẦẨẪẬ",
            "ĐƠƯ",
            "ẾỀỂỄỆ",
            "ỐỒỔỖỘỚỜỞỠỢ",
            "ỨỪỬỮỰ",
            "ỲÝỶỸỴ",
        ] {
            assert!(text.chars().all(|c| fold_latin(c).is_some()), "{text}");
        }
    }

    #[test]
    fn slugs_drop_what_cannot_be_spelled_and_collapse_separators() {
        assert_eq!(slug("  --Hello,   World!!--  ", 63), "hello-world");
        assert_eq!(slug("pwn 🐱 cat", 63), "pwn-cat");
        assert_eq!(slug("abc挑战def", 63), "abcdef");
        assert_eq!(slug("Ελληνικά Flag", 63), "flag");
        assert_eq!(slug("挑战", 63), "chal");
        assert_eq!(slug("", 63), "chal");
        assert_eq!(slug("---", 63), "chal");
        assert_eq!(slug("", 2), "ch");
        assert_eq!(slug("anything", 0), "");
    }

    #[test]
    fn slugs_are_cut_at_a_word_boundary_without_trailing_dash() {
        assert_eq!(slug("abc def", 4), "abc");
        assert_eq!(slug("abc def", 5), "abc-d");
        // A two-letter fold that does not fit is left out whole.
        assert_eq!(slug("aß", 2), "a");
    }

    #[test]
    fn long_names_shorten_the_slug_never_the_ids() {
        let name = namespace_name(
            TeamId(123_456_789),
            ChallengeId(987_654),
            &"very long challenge name ".repeat(10),
            1_700_000_000,
        );
        // 30 characters of room; the cut falls on a dash, which is not written.
        assert_eq!(
            name,
            "team-123456789-987654-very-long-challenge-name-very-1700000000"
        );
    }

    #[test]
    fn the_longest_ids_keep_a_slug_and_round_trip() {
        let name = namespace_name(
            TeamId(i64::MAX),
            ChallengeId(i64::MAX),
            "web",
            MAX_STARTED_UNIX,
        );
        assert_eq!(
            name,
            "team-9223372036854775807-9223372036854775807-web-99999999999999"
        );
        assert_eq!(
            parse_namespace(&name),
            Ok(ParsedNamespace {
                team: TeamId(i64::MAX),
                challenge: ChallengeId(i64::MAX),
                started_unix: MAX_STARTED_UNIX,
            })
        );
    }

    #[test]
    fn times_past_the_maximum_are_clamped() {
        let name = namespace_name(TeamId(1), ChallengeId(2), "x", u64::MAX);
        assert_eq!(name, "team-1-2-x-99999999999999");
    }

    #[test]
    fn negative_ids_make_valid_names_that_parse_refuses() {
        let name = namespace_name(TeamId(-5), ChallengeId(7), "x", 5);
        assert_eq!(name, "team-m5-7-x-5");
        assert_eq!(
            parse_namespace(&name),
            Err(NamingError::InvalidTeam("m5".to_owned()))
        );
        let name = namespace_name(TeamId(1), ChallengeId(i64::MIN), "x", 5);
        assert_eq!(name, "team-1-m9223372036854775808-x-5");
        assert_eq!(
            parse_namespace(&name),
            Err(NamingError::InvalidChallenge(
                "m9223372036854775808".to_owned()
            ))
        );
        let worst = namespace_name(TeamId(i64::MIN), ChallengeId(i64::MIN), "web", u64::MAX);
        assert_eq!(
            worst,
            "team-m9223372036854775808-m9223372036854775808-w-99999999999999"
        );
    }

    #[test]
    fn parse_reads_ids_from_the_left_and_time_from_the_right() {
        let parsed = parse_namespace("team-12-34-2048-v2-99-1700000000").expect("parses");
        assert_eq!(
            parsed,
            ParsedNamespace {
                team: TeamId(12),
                challenge: ChallengeId(34),
                started_unix: 1_700_000_000,
            }
        );
        assert_eq!(
            parse_namespace("team-shared-3-x-9").map(|p| p.team),
            Ok(TeamId::SHARED)
        );
        assert_eq!(
            parse_namespace("team-0-3-x-9").map(|p| p.team),
            Ok(TeamId::PREVIEW)
        );
    }

    #[test]
    fn parse_refuses_what_namespace_name_never_writes() {
        let not_label = [
            "",
            "Team-1-2-x-3",
            "team-1-2-x-3-",
            "1team-1-2-x-3",
            "team_1_2",
        ];
        for name in not_label {
            assert!(
                matches!(parse_namespace(name), Err(NamingError::NotALabel(_))),
                "{name:?}"
            );
        }
        assert!(matches!(
            parse_namespace(&format!("team-1-2-{}-3", "x".repeat(60))),
            Err(NamingError::NotALabel(_))
        ));
        for name in [
            "kube-system",
            "team-1",
            "team-1-2",
            "team-1-2-3",
            "team-1-2--3",
            "teams-1-2-x-3",
        ] {
            assert!(
                matches!(
                    parse_namespace(name),
                    Err(NamingError::NotAnInstanceNamespace(_))
                ),
                "{name:?}"
            );
        }
        for (name, err) in [
            ("team-01-2-x-3", NamingError::InvalidTeam("01".into())),
            ("team-x-2-x-3", NamingError::InvalidTeam("x".into())),
            ("team--1-2-x-3", NamingError::InvalidTeam("".into())),
            (
                "team-9223372036854775808-2-x-3",
                NamingError::InvalidTeam("9223372036854775808".into()),
            ),
            ("team-1-02-x-3", NamingError::InvalidChallenge("02".into())),
            ("team-1-2-x-03", NamingError::InvalidStartTime("03".into())),
            ("team-1-2-x-y", NamingError::InvalidStartTime("y".into())),
            (
                "team-1-2-x-18446744073709551616",
                NamingError::InvalidStartTime("18446744073709551616".into()),
            ),
        ] {
            assert_eq!(parse_namespace(name), Err(err), "{name:?}");
        }
    }

    #[test]
    fn service_names_fit_a_label() {
        assert_eq!(service_name("team-1-2-web-3"), "team-1-2-web-3-svc");
        let ns = format!("team-1-2-{}-3", "a".repeat(MAX_LABEL_LEN - 11));
        assert_eq!(ns.len(), MAX_LABEL_LEN);
        let svc = service_name(&ns);
        assert_eq!(svc.len(), MAX_LABEL_LEN);
        assert!(svc.ends_with("aaa-svc"), "{svc}");
        // A dash at the cut is dropped, so no "--svc".
        let ns = format!("team-1-2-{}-b-1700000000", "a".repeat(49));
        assert_eq!(ns.as_bytes()[58], b'-');
        let svc = service_name(&ns);
        assert!(svc.ends_with("a-svc"), "{svc}");
        assert!(is_dns1123_label(&svc));
    }
}
