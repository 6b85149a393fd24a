//! Several instances in one browser: on instance hosts (`<instance-id>.<suffix>`) each instance
//! has its own host-only cookie and a token opens only its own host; on one shared host, a visit
//! with another instance's token replaces the cookie.

use std::sync::Arc;

use fctf_core::store::{MemoryStore, StateStore};
use fctf_gateway::host::InstanceHosts;

use crate::support::*;

const SUFFIX: &str = "inst.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_host_opens_only_its_own_instance() {
    let (backend_a, backend_b) = (Backend::start().await, Backend::start().await);
    let store = redis_store().await;
    let a = run_instance(&*store, 61, 1, &backend_a.addr.to_string()).await;
    let b = run_instance(&*store, 61, 2, &backend_b.addr.to_string()).await;
    let hosts = InstanceHosts::new(SUFFIX).expect("a suffix");
    let gw = start_gateway_options(
        store.clone(),
        generous_limits(),
        tcp_settings(15),
        Extra {
            instance_hosts: Some(hosts.clone()),
            ..Extra::default()
        },
    );
    let addr = gw.http_addr().expect("bound");
    let admin = gw.admin_addr().expect("bound");
    let (host_a, host_b) = (hosts.host_of(a.instance), hosts.host_of(b.instance));
    let (token_a, token_b) = (a.token(), b.token());
    let (cookie_a, cookie_b) = (
        format!("FCTF_Auth_Token={token_a}"),
        format!("FCTF_Auth_Token={token_b}"),
    );

    // The token exchange on its own host: a host-only cookie (no Domain).
    let visit = get_host(addr, &host_a, &format!("/p?fctftoken={token_a}"), None).await;
    assert_eq!(visit.status, 302, "{visit:?}");
    let set_cookie = visit.header("set-cookie").expect("a Set-Cookie");
    assert!(set_cookie.starts_with(&cookie_a), "{set_cookie}");
    assert!(
        !set_cookie.to_ascii_lowercase().contains("domain"),
        "{set_cookie}"
    );
    // On another instance's host: refused, and no cookie for that host.
    let wrong_visit = get_host(addr, &host_b, &format!("/p?fctftoken={token_a}"), None).await;
    assert_eq!(wrong_visit.status, 403, "{wrong_visit:?}");
    assert!(
        wrong_visit.body.contains("another instance"),
        "{wrong_visit:?}"
    );
    assert_eq!(wrong_visit.header("set-cookie"), None);

    // A's cookie opens A's host, with or without a port, and never B's.
    assert_eq!(
        get_host(addr, &host_a, "/", Some(&cookie_a)).await.status,
        200
    );
    let with_port = get_host(addr, &format!("{host_a}:8080"), "/", Some(&cookie_a)).await;
    assert_eq!(with_port.status, 200);
    let on_b = get_host(addr, &host_b, "/", Some(&cookie_a)).await;
    assert_eq!(on_b.status, 403, "{on_b:?}");
    assert!(backend_b.heads().is_empty(), "A's cookie reached B");
    assert_eq!(backend_a.heads().len(), 2);

    // Both cookies sent (A's planted first, as a parent-domain cookie would be): B's host
    // picks B's, and neither reaches B's instance.
    let both = format!("{cookie_a}; x=1; {cookie_b}");
    let picked = get_host(addr, &host_b, "/b", Some(&both)).await;
    assert_eq!(picked.status, 200, "{picked:?}");
    let heads = backend_b.heads();
    assert_eq!(heads.len(), 1);
    assert!(
        !heads[0].contains(&token_a) && !heads[0].contains(&token_b),
        "{}",
        heads[0]
    );

    // Hosts that name no instance of this gateway, and an ambiguous target.
    let unknown = get_host(addr, "chal.test", "/", Some(&cookie_a)).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let gone = get_host(
        addr,
        &hosts.host_of(fctf_core::ids::InstanceId::new()),
        "/",
        Some(&cookie_a),
    )
    .await;
    assert_eq!(gone.status, 403, "{gone:?}");
    let ambiguous = get_host(addr, &host_a, &format!("http://{host_b}/"), Some(&cookie_a)).await;
    assert_eq!(ambiguous.status, 400, "{ambiguous:?}");

    assert_eq!(
        metric(
            admin,
            "fctf_gateway_token_failures_total{reason=\"wrong_instance\"}"
        )
        .await,
        3
    );
    assert_eq!(backend_a.heads().len(), 2);
    gw.stop();
    release(&*store, &a).await;
    release(&*store, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_host_a_visit_with_another_token_replaces_the_cookie() {
    let (backend_a, backend_b) = (Backend::start().await, Backend::start().await);
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let a = run_instance(&*store, 62, 1, &backend_a.addr.to_string()).await;
    let b = run_instance(&*store, 62, 2, &backend_b.addr.to_string()).await;
    let gw = start_gateway(store, generous_limits());
    let addr = gw.http_addr().expect("bound");

    let visit_a = get(addr, &format!("/?fctftoken={}", a.token()), None).await;
    let visit_b = get(addr, &format!("/?fctftoken={}", b.token()), None).await;
    let (cookie_a, cookie_b) = (
        visit_a.header("set-cookie").expect("A's cookie"),
        visit_b.header("set-cookie").expect("B's cookie"),
    );
    // One name, one path, no Domain: a browser keeps only the last one set.
    let identity = |c: &str| {
        let (name, rest) = c.split_once('=').expect("name=value");
        let path = rest
            .split("; ")
            .find(|a| a.starts_with("Path="))
            .map(str::to_owned);
        (
            name.to_owned(),
            path,
            c.to_ascii_lowercase().contains("domain="),
        )
    };
    assert_eq!(identity(cookie_a), identity(cookie_b));
    assert_eq!(
        identity(cookie_b),
        (
            "FCTF_Auth_Token".to_owned(),
            Some("Path=/".to_owned()),
            false
        )
    );
    let value_b = cookie_b.split(';').next().expect("name=value");
    assert_eq!(value_b, format!("FCTF_Auth_Token={}", b.token()));

    // The replaced cookie leads to B.
    assert_eq!(get(addr, "/", Some(value_b)).await.status, 200);
    assert_eq!(backend_b.heads().len(), 1);
    assert!(backend_a.heads().is_empty());
    gw.stop();
}
