//! Instance host names: with a wildcard host suffix configured (`gateway.instance_host_suffix`),
//! every instance has a host of its own, `<instance-id>.<suffix>`, so several instances open in
//! one browser each keep their own host-only cookie, and a token opens only its own host.
//!
//! The mapping from a `Host` value to an instance is pure, allocation-free and strict: the label
//! must be the instance id's one canonical spelling (32 hex digits; host names are
//! case-insensitive, so upper case is folded), an optional `:port` must be digits, one trailing
//! dot (an absolute name) is allowed. Anything else is not an instance host.

use std::str::FromStr;

use fctf_core::ids::InstanceId;

/// Why a host does not name an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No host was sent (HTTP/1.0 without `Host`).
    #[error("missing Host header")]
    Missing,
    /// The host is not `<instance-id>.<suffix>`.
    #[error("unknown host")]
    Unknown,
}

/// The wildcard host suffix instances live under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceHosts {
    /// Lower case, with a leading dot: `.inst.example.org`.
    dotted_suffix: String,
}

impl InstanceHosts {
    /// Hosts under `suffix` (case and surrounding dots ignored); `None` when it is empty, which
    /// means one host for every instance.
    pub fn new(suffix: &str) -> Option<Self> {
        let suffix = suffix.trim_matches('.');
        if suffix.is_empty() {
            return None;
        }
        Some(InstanceHosts {
            dotted_suffix: format!(".{}", suffix.to_ascii_lowercase()),
        })
    }

    /// The host name of `instance`.
    pub fn host_of(&self, instance: InstanceId) -> String {
        format!("{instance}{}", self.dotted_suffix)
    }

    /// The instance whose host `host` (a `Host` header value or a request target's authority)
    /// names.
    pub fn instance_of(&self, host: &[u8]) -> Result<InstanceId, HostError> {
        if host.is_empty() {
            return Err(HostError::Missing);
        }
        let host = strip_port(host).ok_or(HostError::Unknown)?;
        let host = host.strip_suffix(b".").unwrap_or(host);
        let suffix = self.dotted_suffix.as_bytes();
        if host.len() != 32 + suffix.len() || !host[32..].eq_ignore_ascii_case(suffix) {
            return Err(HostError::Unknown);
        }
        let mut label = [0u8; 32];
        for (out, b) in label.iter_mut().zip(&host[..32]) {
            if !b.is_ascii_hexdigit() {
                return Err(HostError::Unknown);
            }
            *out = b.to_ascii_lowercase();
        }
        let label = std::str::from_utf8(&label).map_err(|_| HostError::Unknown)?;
        InstanceId::from_str(label).map_err(|_| HostError::Unknown)
    }
}

/// `host` without a `:port` (1 to 5 digits); `None` when the port is malformed or the host is
/// an IP-literal (`[...]`, never an instance host).
fn strip_port(host: &[u8]) -> Option<&[u8]> {
    if host.first() == Some(&b'[') {
        return None;
    }
    match host.iter().rposition(|b| *b == b':') {
        None => Some(host),
        Some(colon) => {
            let port = &host[colon + 1..];
            (!port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit))
                .then_some(&host[..colon])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_host_names_its_instance() {
        let hosts = InstanceHosts::new(".Inst.Example.org.").expect("a suffix");
        let id = InstanceId::new();
        let host = hosts.host_of(id);
        assert!(host.ends_with(".inst.example.org"), "{host}");
        assert_eq!(hosts.instance_of(host.as_bytes()), Ok(id));
        assert_eq!(hosts.instance_of(format!("{host}:8080").as_bytes()), Ok(id));
        assert_eq!(hosts.instance_of(format!("{host}.").as_bytes()), Ok(id));
        let upper = host.to_ascii_uppercase();
        assert_eq!(hosts.instance_of(upper.as_bytes()), Ok(id));
        assert_eq!(InstanceHosts::new(""), None);
        assert_eq!(InstanceHosts::new(".."), None);
    }

    proptest::proptest! {
        #[test]
        fn a_host_maps_only_to_the_instance_it_spells(
            host in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            id in "[0-9a-fA-F]{32}",
            port in proptest::option::of(1u16..),
        ) {
            let hosts = InstanceHosts::new("inst.test").expect("a suffix");
            if let Ok(found) = hosts.instance_of(&host) {
                let own = hosts.host_of(found);
                let text = String::from_utf8_lossy(&host).to_ascii_lowercase();
                let bare = text.split(':').next().unwrap_or_default();
                proptest::prop_assert_eq!(bare.strip_suffix('.').unwrap_or(bare), own);
            }
            let spelled = match port {
                Some(port) => format!("{id}.INST.test:{port}"),
                None => format!("{id}.inst.test."),
            };
            let found = hosts.instance_of(spelled.as_bytes());
            proptest::prop_assert_eq!(found, Ok(id.to_ascii_lowercase().parse().unwrap()));
        }
    }

    #[test]
    fn other_hosts_name_no_instance() {
        let hosts = InstanceHosts::new("inst.test").expect("a suffix");
        let id = InstanceId::new().to_string();
        assert_eq!(hosts.instance_of(b""), Err(HostError::Missing));
        for host in [
            "inst.test".to_owned(),
            format!("{id}.inst.test.evil"),
            format!("{id}.other.test"),
            format!("x{id}.inst.test"),
            format!("{}.inst.test", &id[1..]),
            format!("a.{id}.inst.test"),
            format!("{id}.inst.test:"),
            format!("{id}.inst.test:123456"),
            format!("{id}.inst.test:+80"),
            format!("{id}.inst.test.."),
            format!("{}-{}.inst.test", &id[..8], &id[9..]),
            format!("{}g.inst.test", &id[..31]),
            "[::1]:80".to_owned(),
            format!("user@{id}.inst.test"),
        ] {
            assert_eq!(
                hosts.instance_of(host.as_bytes()),
                Err(HostError::Unknown),
                "{host}"
            );
        }
    }
}
