//! Host names to instances (`InstanceHosts::instance_of`), checked against rules written here
//! independently: a host names an instance only when, without one `:digits` port and one
//! trailing dot, it is exactly the instance's canonical id, a dot and the suffix (ASCII case
//! ignored). Every id's own host maps back to it, with and without a port.

#![no_main]

use fctf_core::ids::InstanceId;
use fctf_gateway::host::{HostError, InstanceHosts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // NUL-separated: the suffix, then a host, then 16 bytes of an instance id.
    let mut parts = data.splitn(3, |b| *b == 0);
    let suffix = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let host = parts.next().unwrap_or_default();
    let id_bytes = parts.next().unwrap_or_default();

    let Some(hosts) = InstanceHosts::new(&suffix) else {
        assert!(suffix.trim_matches('.').is_empty());
        return;
    };
    match hosts.instance_of(host) {
        Ok(id) => {
            let mut bare = host;
            if let Some(colon) = bare.iter().rposition(|b| *b == b':') {
                let port = &bare[colon + 1..];
                assert!(!port.is_empty() && port.len() <= 5);
                assert!(port.iter().all(u8::is_ascii_digit));
                bare = &bare[..colon];
            }
            let bare = bare.strip_suffix(b".").unwrap_or(bare);
            assert!(
                bare.eq_ignore_ascii_case(hosts.host_of(id).as_bytes()),
                "{host:?} -> {id}"
            );
        }
        Err(HostError::Missing) => assert!(host.is_empty()),
        Err(HostError::Unknown) => assert!(!host.is_empty()),
    }

    if id_bytes.len() >= 16 {
        let hex: String = id_bytes[..16].iter().map(|b| format!("{b:02x}")).collect();
        if let Ok(id) = hex.parse::<InstanceId>() {
            let own = hosts.host_of(id);
            if !own.contains(':') {
                assert_eq!(hosts.instance_of(own.as_bytes()), Ok(id), "{own}");
                let with_port = format!("{own}:443");
                assert_eq!(hosts.instance_of(with_port.as_bytes()), Ok(id));
            }
        }
    }
});
