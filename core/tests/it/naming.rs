//! Namespace naming: properties over any ids, names and times, and the listener's inverse.

use fctf_core::ids::{ChallengeId, TeamId};
use fctf_core::naming::{
    MAX_LABEL_LEN, MAX_STARTED_UNIX, NamingError, ParsedNamespace, namespace_name, parse_namespace,
    service_name, slug,
};
use proptest::prelude::*;

/// DNS-1123 label, written independently of the module: lowercase alphanumerics and `-`,
/// starting with a letter, ending alphanumeric, 1 to 63 characters.
fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

#[test]
fn vietnamese_challenge_names_become_readable_slugs() {
    for (name, expected) in [
        (
            "Chào mừng đến FCTF",
            "team-12-3-chao-mung-den-fctf-1700000000",
        ),
        ("Bảo mật Web", "team-12-3-bao-mat-web-1700000000"),
        ("ĐIỀU TRA SỐ", "team-12-3-dieu-tra-so-1700000000"),
        (
            "Khai thác nhị phân (pwn)",
            "team-12-3-khai-thac-nhi-phan-pwn-1700000000",
        ),
        ("Mật mã — RSA 2048", "team-12-3-mat-ma-rsa-2048-1700000000"),
        ("🔥🔥🔥", "team-12-3-chal-1700000000"),
    ] {
        assert_eq!(
            namespace_name(TeamId(12), ChallengeId(3), name, 1_700_000_000),
            expected
        );
    }
}

#[test]
fn the_listener_maps_namespaces_back_to_team_and_challenge() {
    let cases = [
        (TeamId(1), ChallengeId(1), "a", 0),
        (
            TeamId::PREVIEW,
            ChallengeId(55),
            "Web 2048 v2",
            1_700_000_000,
        ),
        (TeamId::SHARED, ChallengeId(0), "shared-7-9", 1_700_000_001),
        (
            TeamId(i64::MAX),
            ChallengeId(i64::MAX),
            "x",
            MAX_STARTED_UNIX,
        ),
    ];
    for (team, challenge, name, started_unix) in cases {
        let ns = namespace_name(team, challenge, name, started_unix);
        assert_eq!(
            parse_namespace(&ns),
            Ok(ParsedNamespace {
                team,
                challenge,
                started_unix
            }),
            "{ns}"
        );
    }
}

#[test]
fn namespaces_the_platform_did_not_make_are_not_instances() {
    for ns in ["default", "kube-system", "argo", "fctf", "team-a"] {
        assert!(
            matches!(
                parse_namespace(ns),
                Err(NamingError::NotAnInstanceNamespace(_))
            ),
            "{ns}"
        );
    }
}

fn valid_team() -> impl Strategy<Value = TeamId> {
    prop_oneof![
        Just(TeamId::SHARED),
        Just(TeamId::PREVIEW),
        (0..=i64::MAX).prop_map(TeamId),
        (1..100_000i64).prop_map(TeamId),
    ]
}

fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9 _.:-]{0,100}",
        "[àáảãạăắằẳẵặâấầẩẫậđèéẻẽẹêếềểễệìíỉĩịòóỏõọôốồổỗộơớờởỡợùúủũụưứừửữựỳýỷỹỵ \\-0-9]{0,80}",
        "[ÀÁẢÃẠĂẮẰẲẴẶÂẤẦẨẪẬĐÈÉẺẼẸÊẾỀỂỄỆ !?#]{0,80}",
    ]
}

proptest! {
    #[test]
    fn every_input_gives_a_label_of_at_most_63(
        team in any::<i64>(),
        challenge in any::<i64>(),
        name in any_name(),
        started_unix in any::<u64>(),
    ) {
        let ns = namespace_name(TeamId(team), ChallengeId(challenge), &name, started_unix);
        prop_assert!(is_label(&ns), "{:?} -> {:?}", name, ns);
        prop_assert!(ns.len() <= MAX_LABEL_LEN);
        let svc = service_name(&ns);
        prop_assert!(is_label(&svc), "{:?}", svc);
        prop_assert!(svc.ends_with("-svc"));
    }

    #[test]
    fn valid_ids_and_times_round_trip(
        team in valid_team(),
        challenge in prop_oneof![0..=i64::MAX, 0..1000i64],
        name in any_name(),
        started_unix in prop_oneof![0..=MAX_STARTED_UNIX, 1_600_000_000..2_000_000_000u64],
    ) {
        let ns = namespace_name(team, ChallengeId(challenge), &name, started_unix);
        prop_assert_eq!(
            parse_namespace(&ns),
            Ok(ParsedNamespace { team, challenge: ChallengeId(challenge), started_unix })
        );
        // The slug is shortened, never the ids: the name starts with them whole.
        let team_text = if team == TeamId::SHARED {
            "shared".to_owned()
        } else {
            team.0.to_string()
        };
        let expected_start = format!("team-{team_text}-{challenge}-");
        prop_assert!(ns.starts_with(&expected_start), "{}", ns);
        let expected_end = format!("-{started_unix}");
        prop_assert!(ns.ends_with(&expected_end), "{}", ns);
    }

    #[test]
    fn negative_ids_other_than_shared_are_refused(
        team in i64::MIN..-1,
        challenge in i64::MIN..0,
        name in any_name(),
        started_unix in any::<u64>(),
    ) {
        let bad_team = namespace_name(TeamId(team), ChallengeId(1), &name, started_unix);
        prop_assert!(matches!(parse_namespace(&bad_team), Err(NamingError::InvalidTeam(_))));
        let bad_challenge = namespace_name(TeamId(1), ChallengeId(challenge), &name, started_unix);
        prop_assert!(matches!(
            parse_namespace(&bad_challenge),
            Err(NamingError::InvalidChallenge(_))
        ));
    }

    #[test]
    fn slugs_are_clean_and_bounded(name in any_name(), max_len in 0usize..80) {
        let s = slug(&name, max_len);
        prop_assert!(s.len() <= max_len);
        prop_assert_eq!(s.is_empty(), max_len == 0);
        prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        prop_assert!(!s.starts_with('-') && !s.ends_with('-') && !s.contains("--"), "{:?}", s);
    }

    #[test]
    fn parse_never_panics_and_accepts_only_labels(s in "\\PC{0,80}") {
        if parse_namespace(&s).is_ok() {
            prop_assert!(is_label(&s));
            prop_assert!(s.starts_with("team-"));
        }
    }
}
