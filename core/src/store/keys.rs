//! Logical key names of the state store, built in one place so every service names an entry the
//! same way.
//!
//! A caller passes a *name* to a [`StateStore`](super::StateStore) method (the `key` or `name`
//! argument); the store turns it into a logical key with the function of that kind of entry
//! (`rl:{name}` for a rate-limit bucket, `lease:{name}` for a lease set, ...) and a store with a
//! shared backend adds its own prefix (`fctf:` by default for Redis). Each kind therefore has its
//! own namespace: a lock can never collide with a counter of the same name, and an operator can
//! read a Redis key and tell what it is.
//!
//! # Never a raw secret in a name
//!
//! Key names are visible to anyone who can run `SCAN` or `MONITOR`, end up in logs and in backups.
//! A name must therefore never contain a challenge token, a session id or any other credential:
//! pass [`digest`] of it instead. Addresses, team ids and instance ids are fine as they are.

use sha2::{Digest, Sha256};

use crate::ids::{ChallengeId, TeamId};

/// Prefix shared by every deployment-record key (what a listing scans for).
pub const DEPLOYMENT_PREFIX: &str = "deploy:";

/// How many bytes of the SHA-256 [`digest`] are kept (32 hex characters): 128 bits, so two
/// different secrets never share a bucket in practice.
const DIGEST_BYTES: usize = 16;

/// Key of the deployment record of (team, challenge): `deploy:{team}:{challenge}`.
pub fn deployment(team: TeamId, challenge: ChallengeId) -> String {
    format!("{DEPLOYMENT_PREFIX}{team}:{challenge}")
}

/// Key of a team's instance-quota set (instance ids scored by expiry): `quota:{team}`.
pub fn quota(team: TeamId) -> String {
    format!("quota:{team}")
}

/// Key of a rate-limit bucket: `rl:{name}`.
pub fn rate_limit(name: &str) -> String {
    format!("rl:{name}")
}

/// Key of a connection-lease set (holders scored by expiry): `lease:{name}`.
pub fn lease(name: &str) -> String {
    format!("lease:{name}")
}

/// Key of a short lock: `lock:{name}`.
pub fn lock(name: &str) -> String {
    format!("lock:{name}")
}

/// Key of an attempt counter: `ctr:{name}`.
pub fn counter(name: &str) -> String {
    format!("ctr:{name}")
}

/// Key of a cooldown: `cd:{name}`.
pub fn cooldown(name: &str) -> String {
    format!("cd:{name}")
}

/// Key of a remembered nonce: `once:{name}`.
pub fn once(name: &str) -> String {
    format!("once:{name}")
}

/// A short, stable stand-in for a secret in a key name: the first 128 bits of its SHA-256, as 32
/// lowercase hex characters. Use it for tokens, session ids and anything else that must not be
/// readable from the store.
pub fn digest(secret: &[u8]) -> String {
    let full = Sha256::digest(secret);
    hex::encode(&full[..DIGEST_BYTES])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_namespace() {
        let names = [
            rate_limit("x"),
            lease("x"),
            lock("x"),
            counter("x"),
            cooldown("x"),
            once("x"),
        ];
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(deployment(TeamId(7), ChallengeId(3)), "deploy:7:3");
        assert_eq!(deployment(TeamId::SHARED, ChallengeId(3)), "deploy:-1:3");
        assert_eq!(quota(TeamId(7)), "quota:7");
    }

    #[test]
    fn digest_is_short_stable_hex_and_hides_the_secret() {
        let d = digest(b"secret-token");
        assert_eq!(d.len(), 32);
        assert!(
            d.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(d, digest(b"secret-token"));
        assert_ne!(d, digest(b"secret-tokem"));
        assert!(!d.contains("secret"));
        // SHA-256("abc") starts with ba7816bf8f01cfea414140de5dae2223.
        assert_eq!(digest(b"abc"), "ba7816bf8f01cfea414140de5dae2223");
    }
}
