//! Identifiers every service shares: teams, challenges and instances.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A team id. Positive ids are real teams (database ids); two values are reserved, as in the
/// original system: [`TeamId::PREVIEW`] for an admin previewing a challenge and [`TeamId::SHARED`]
/// for a shared instance that every team reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TeamId(pub i64);

impl TeamId {
    /// The admin preview pseudo-team (rendered `0` in names).
    pub const PREVIEW: TeamId = TeamId(0);
    /// The shared-instance pseudo-team (rendered `shared` in names).
    pub const SHARED: TeamId = TeamId(-1);

    /// True for a real team (not preview or shared).
    pub fn is_real(self) -> bool {
        self.0 > 0
    }
}

impl fmt::Display for TeamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A challenge id (database id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChallengeId(pub i64);

impl fmt::Display for ChallengeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The id of one instance lifetime: a new one for every start, so anything that refers to an old
/// instance (a token, a late event, a redelivered job) can never act on a newer one.
///
/// Rendered as 32 lowercase hex digits (a UUID v4 without dashes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(pub uuid::Uuid);

impl InstanceId {
    /// A fresh random instance id.
    pub fn new() -> Self {
        InstanceId(uuid::Uuid::new_v4())
    }
}

impl Default for InstanceId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

/// Error for an instance id that is not 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance id must be 32 lowercase hex digits")]
pub struct InvalidInstanceId;

impl FromStr for InstanceId {
    type Err = InvalidInstanceId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Exactly one canonical form, so two spellings can never name the same instance.
        if s.len() != 32
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(InvalidInstanceId);
        }
        uuid::Uuid::try_parse(s)
            .map(InstanceId)
            .map_err(|_| InvalidInstanceId)
    }
}

impl Serialize for InstanceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_round_trips_in_one_canonical_form() {
        let id = InstanceId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<InstanceId>(), Ok(id));
        assert!(text.to_uppercase().parse::<InstanceId>().is_err());
        assert!(id.0.hyphenated().to_string().parse::<InstanceId>().is_err());
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(
            serde_json::from_str::<InstanceId>(&json).expect("deserialize"),
            id
        );
    }

    #[test]
    fn reserved_teams_are_not_real() {
        assert!(!TeamId::PREVIEW.is_real());
        assert!(!TeamId::SHARED.is_real());
        assert!(TeamId(7).is_real());
    }
}
