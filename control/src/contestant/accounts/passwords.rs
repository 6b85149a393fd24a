//! Password hashing (Argon2id, PHC strings) and the password policy.
//!
//! Hashing is slow on purpose, so it runs on the blocking pool. A login for a name that does not
//! exist verifies against a dummy hash of the same cost, so a wrong name and a wrong password
//! take the same time and get the same answer.
//!
//! [`Passwords::light`] uses the smallest Argon2 cost, for tests only (the test kit): the hash
//! string records its own parameters, so verification works either way.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};

/// Longest password accepted (Argon2 takes any length; this bounds the work per request).
pub const MAX_PASSWORD_LEN: usize = 256;

/// Hashes and verifies passwords at one cost.
#[derive(Debug)]
pub struct Passwords {
    params: Params,
    dummy: OnceLock<String>,
}

impl Passwords {
    /// Argon2id with the crate's recommended parameters (19 MiB, 2 passes).
    pub fn standard() -> Self {
        Self::with_params(Params::default())
    }

    /// The cheapest Argon2id (8 KiB, 1 pass): for tests only.
    pub fn light() -> Self {
        let params = Params::new(8, 1, 1, None).unwrap_or_default();
        Self::with_params(params)
    }

    fn with_params(params: Params) -> Self {
        Self {
            params,
            dummy: OnceLock::new(),
        }
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// The PHC string of `password` with a fresh salt. Blocking: call from the blocking pool.
    pub fn hash_blocking(&self, password: &str) -> Result<String, String> {
        self.argon2()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| e.to_string())
    }

    /// Whether `password` matches `stored`; when there is no stored hash (unknown user), verifies
    /// against a dummy hash of the same cost and answers false. Blocking.
    pub fn verify_blocking(&self, password: &str, stored: Option<&str>) -> bool {
        let dummy;
        let hash = match stored {
            Some(hash) => hash,
            None => {
                dummy = self.dummy.get_or_init(|| {
                    self.hash_blocking("fctf dummy password")
                        .unwrap_or_default()
                });
                dummy.as_str()
            }
        };
        let matched = self
            .argon2()
            .verify_password(password.as_bytes(), hash)
            .is_ok();
        matched && stored.is_some()
    }
}

/// Why a password is refused by the policy.
pub fn check_policy(password: &str, min_len: u32) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < min_len as usize {
        return Err(format!(
            "The password must be at least {min_len} characters long."
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "The password must be at most {MAX_PASSWORD_LEN} bytes long."
        ));
    }
    if password.trim().is_empty() {
        return Err("The password must not be only spaces.".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password() {
        let passwords = Passwords::light();
        let hash = passwords.hash_blocking("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(passwords.verify_blocking("correct horse", Some(&hash)));
        assert!(!passwords.verify_blocking("wrong horse", Some(&hash)));
        assert!(!passwords.verify_blocking("fctf dummy password", None));
        assert!(!passwords.verify_blocking("x", Some("not a hash")));
    }

    #[test]
    fn policy_counts_characters_and_bounds_length() {
        assert!(check_policy("short", 8).is_err());
        assert!(check_policy("long enough", 8).is_ok());
        assert!(check_policy("ééééééééé", 8).is_ok());
        assert!(check_policy("        ", 8).is_err());
        assert!(check_policy(&"a".repeat(300), 8).is_err());
    }
}
