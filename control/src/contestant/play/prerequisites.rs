//! Prerequisites: a challenge with unsolved prerequisites is hidden, or shown anonymised
//! (CTFd's `requirements = {"prerequisites": [...], "anonymize": true}`).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// CTFd's `requirements` of a challenge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    #[serde(default)]
    pub prerequisites: Vec<i64>,
    #[serde(default)]
    pub anonymize: bool,
}

impl Requirements {
    /// Reads the stored JSON; absent or unreadable text means no requirement.
    pub fn parse(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// The stored JSON, `None` when there is no requirement.
    pub fn to_stored(&self) -> Option<String> {
        if self.prerequisites.is_empty() {
            None
        } else {
            serde_json::to_string(self).ok()
        }
    }
}

/// What a team may see of a challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Every prerequisite is solved (or there is none).
    Open,
    /// Locked, listed as a placeholder without name, description or value.
    Anonymized,
    /// Locked and not listed.
    Hidden,
}

/// What a team that solved `solved` may see of a challenge with `requirements`.
pub fn access(requirements: &Requirements, solved: &HashSet<i64>) -> Access {
    if requirements
        .prerequisites
        .iter()
        .all(|id| solved.contains(id))
    {
        Access::Open
    } else if requirements.anonymize {
        Access::Anonymized
    } else {
        Access::Hidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_challenges_are_hidden_or_anonymised() {
        let solved: HashSet<i64> = [1, 2].into_iter().collect();
        let none = Requirements::default();
        assert_eq!(access(&none, &HashSet::new()), Access::Open);
        let met = Requirements {
            prerequisites: vec![1, 2],
            anonymize: false,
        };
        assert_eq!(access(&met, &solved), Access::Open);
        let unmet = Requirements {
            prerequisites: vec![1, 3],
            anonymize: false,
        };
        assert_eq!(access(&unmet, &solved), Access::Hidden);
        let anon = Requirements {
            anonymize: true,
            ..unmet
        };
        assert_eq!(access(&anon, &solved), Access::Anonymized);
    }

    #[test]
    fn stored_form_is_ctfds() {
        let r = Requirements::parse(Some(r#"{"prerequisites":[4,5],"anonymize":true}"#));
        assert_eq!(r.prerequisites, vec![4, 5]);
        assert!(r.anonymize);
        assert_eq!(
            Requirements::parse(Some("not json")),
            Requirements::default()
        );
        assert_eq!(Requirements::parse(None).to_stored(), None);
    }
}
