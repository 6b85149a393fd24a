//! The `[gateway]` section reaches the gateway: trusted proxies, the drain period, the starting
//! hold, instance hosts and the PROXY protocol.

use std::sync::Arc;
use std::time::Duration;

use fctf_core::config::{self, MapSource};
use fctf_core::store::MemoryStore;
use fctf_gateway::server::GatewayOptions;

fn options(text: &str) -> GatewayOptions {
    let config = config::load(text, &MapSource::new()).expect("config loads");
    GatewayOptions::from_config(&config, Arc::new(MemoryStore::new())).expect("options")
}

#[test]
fn trusted_proxies_and_the_drain_period_come_from_the_config() {
    let options = options(
        "[gateway]\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n\
         drain_secs = 7\n",
    );
    assert_eq!(options.grace_period, Duration::from_secs(7));
    let trusted = &options.http_settings.trusted_proxies;
    for ip in [
        "10.1.2.3",
        "2001:db8:ffff::1",
        "192.0.2.7",
        "::ffff:10.0.0.1",
    ] {
        assert!(trusted.contains(ip.parse().expect("ip")), "{ip}");
    }
    for ip in ["11.0.0.1", "192.0.2.8", "2001:db9::1", "127.0.0.1"] {
        assert!(!trusted.contains(ip.parse().expect("ip")), "{ip}");
    }
}

#[test]
fn by_default_no_proxy_is_trusted_and_the_drain_lasts_five_seconds() {
    let options = options("");
    assert_eq!(options.grace_period, Duration::from_secs(5));
    let trusted = &options.http_settings.trusted_proxies;
    assert!(!trusted.contains("127.0.0.1".parse().expect("ip")));
    assert!(!trusted.contains("10.0.0.1".parse().expect("ip")));
}

#[test]
fn the_starting_hold_instance_hosts_and_proxy_protocol_come_from_the_config() {
    let defaults = options("");
    assert_eq!(
        defaults.admission.settings().starting_hold,
        Duration::from_millis(3000)
    );
    assert_eq!(defaults.http_settings.instance_hosts, None);
    assert!(!defaults.tcp_settings.proxy_protocol);

    let options = options(
        "[gateway]\nstarting_hold_ms = 500\ninstance_host_suffix = \".Inst.Example.org\"\n\
         proxy_protocol = true\n",
    );
    assert_eq!(
        options.admission.settings().starting_hold,
        Duration::from_millis(500)
    );
    let hosts = options
        .http_settings
        .instance_hosts
        .expect("instance hosts");
    let id = fctf_core::ids::InstanceId::new();
    assert_eq!(hosts.host_of(id), format!("{id}.inst.example.org"));
    assert!(options.tcp_settings.proxy_protocol);
}
