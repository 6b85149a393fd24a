//! Config: defaults, every field's validation, environment overrides (through `MapSource`, never
//! the process environment), all-mistakes-at-once reporting, secrecy, and the generated files.

use std::collections::BTreeSet;
use std::path::Path;

use fctf_core::config::{
    self, Config, ConfigErrors, ErrorKind, KeyOrigin, MapSource, QueueBackend, StoreBackend,
};
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::token::{self, Claims};

const SECRET_A: &str = "Zm9vYmFyYmF6cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG8=";
const SECRET_B: &str = "c2VjcmV0LWItd2hpY2gtaXMtbG9uZy1lbm91Z2gtZm9yLWhtYWM=";

fn load(text: &str) -> Result<Config, ConfigErrors> {
    config::load(text, &MapSource::new())
}

fn errors(text: &str, source: &MapSource) -> ConfigErrors {
    match config::load(text, source) {
        Ok(_) => panic!("expected mistakes in:\n{text}"),
        Err(errors) => errors,
    }
}

/// The single mistake of `text`, which must have exactly one.
fn single_error(text: &str) -> config::ConfigError {
    let errors = errors(text, &MapSource::new());
    assert_eq!(
        errors.len(),
        1,
        "expected one mistake in:\n{text}\ngot:\n{errors}"
    );
    errors.0.into_iter().next().unwrap()
}

fn repo_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn claims(kid: &str) -> Claims {
    Claims {
        kid: kid.to_owned(),
        team: TeamId(7),
        challenge: ChallengeId(3),
        instance: InstanceId::new(),
        route: "127.0.0.1:4000".to_owned(),
        iat: 1_000,
        exp: 2_000,
    }
}

#[test]
fn an_empty_file_is_the_embedded_default() {
    let config = load("").unwrap();
    assert_eq!(config.tokens.active_kid, "k1");
    assert_eq!(config.tokens.skew_secs, 30);
    assert_eq!(config.tokens.ttl_secs, 3600);
    assert_eq!(config.signing.active_kid, "s1");
    assert_eq!(config.signing.window_secs, 60);
    assert_eq!(config.store.backend, StoreBackend::Memory);
    assert_eq!(config.store.redis_url.as_str(), "redis://127.0.0.1:6379");
    assert_eq!(config.store.key_prefix, "fctf:");
    assert_eq!(config.store.timeout_ms, 500);
    assert_eq!(config.queue.backend, QueueBackend::Memory);
    assert_eq!(
        config.queue.amqp_url.as_str(),
        "amqp://guest:guest@127.0.0.1:5672"
    );
    assert_eq!(config.queue.vhost, "fctf_deploy");
    assert_eq!(config.queue.exchange, "deployment_exchange");
    assert_eq!(config.queue.routing_key, "deploy");
    assert_eq!(config.queue.queue, "deployment_queue");
    assert_eq!(config.queue.max_length, 300);
    assert_eq!(config.queue.publish_timeout_ms, 3000);
    assert_eq!(config.queue.delivery_limit, 5);
    assert_eq!(config.database.url.as_str(), "sqlite://data/fctf.db");
    assert_eq!(config.database.max_connections, 16);
    assert!(config.is_embedded());
}

#[test]
fn sections_left_out_keep_their_defaults() {
    let config = load("[store]\ntimeout_ms = 250\n").unwrap();
    assert_eq!(config.store.timeout_ms, 250);
    assert_eq!(config.store.key_prefix, "fctf:");
    assert_eq!(config.queue.max_length, 300);
}

#[test]
fn the_embedded_default_generates_working_keys_per_load() {
    let config = load("").unwrap();
    assert_eq!(config.tokens.keys.len(), 1);
    assert_eq!(*config.tokens.keys[0].origin(), KeyOrigin::Generated);
    let key = config.tokens.active_key().expect("the active key exists");
    assert_eq!(key.kid(), "k1");
    let minted = token::mint(key, &claims("k1")).unwrap();
    let verifier = config.tokens.verifier().unwrap();
    assert_eq!(verifier.verify(&minted, 1_500).unwrap().team, TeamId(7));
    assert!(config.signing.active_key().is_some());
    assert!(config.signing.key_ring().is_ok());

    // Another load is another process start: another key, so the old token no longer verifies.
    let other = load("").unwrap().tokens.verifier().unwrap();
    assert_eq!(
        other.verify(&minted, 1_500),
        Err(token::TokenError::BadSignature)
    );
}

/// One mistaken value per field, with the mistake it must produce.
const FIELD_CASES: &[(&str, &str, ErrorKind)] = &[
    (
        "[tokens]\nactive_kid = \"k 1\"",
        "tokens.active_kid",
        ErrorKind::InvalidValue,
    ),
    (
        "[tokens]\nactive_kid = 1",
        "tokens.active_kid",
        ErrorKind::WrongType,
    ),
    (
        "[tokens]\nkeys = \"k1\"",
        "tokens.keys",
        ErrorKind::WrongType,
    ),
    (
        "[tokens]\nskew_secs = 301",
        "tokens.skew_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[tokens]\nskew_secs = -1",
        "tokens.skew_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[tokens]\nskew_secs = \"30\"",
        "tokens.skew_secs",
        ErrorKind::WrongType,
    ),
    (
        "[tokens]\nttl_secs = 0",
        "tokens.ttl_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[signing]\nactive_kid = \"\"",
        "signing.active_kid",
        ErrorKind::InvalidValue,
    ),
    (
        "[signing]\nkeys = [1]",
        "signing.keys[0]",
        ErrorKind::WrongType,
    ),
    (
        "[signing]\nwindow_secs = 0",
        "signing.window_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[store]\nbackend = \"redsi\"",
        "store.backend",
        ErrorKind::InvalidValue,
    ),
    (
        "[store]\nredis_url = \"http://127.0.0.1:6379\"",
        "store.redis_url",
        ErrorKind::InvalidValue,
    ),
    (
        "[store]\nkey_prefix = \"a b\"",
        "store.key_prefix",
        ErrorKind::InvalidValue,
    ),
    (
        "[store]\ntimeout_ms = 0",
        "store.timeout_ms",
        ErrorKind::OutOfRange,
    ),
    (
        "[queue]\nbackend = \"kafka\"",
        "queue.backend",
        ErrorKind::InvalidValue,
    ),
    (
        "[queue]\namqp_url = \"amqp://127.0.0.1:99999\"",
        "queue.amqp_url",
        ErrorKind::InvalidValue,
    ),
    (
        "[queue]\nvhost = \"\"",
        "queue.vhost",
        ErrorKind::InvalidValue,
    ),
    (
        "[queue]\nexchange = \"deploy exchange\"",
        "queue.exchange",
        ErrorKind::InvalidValue,
    ),
    (
        "[queue]\nrouting_key = \"\"",
        "queue.routing_key",
        ErrorKind::InvalidValue,
    ),
    ("[queue]\nqueue = 3", "queue.queue", ErrorKind::WrongType),
    (
        "[queue]\nmax_length = 0",
        "queue.max_length",
        ErrorKind::OutOfRange,
    ),
    (
        "[queue]\nmax_length = 5000000000",
        "queue.max_length",
        ErrorKind::OutOfRange,
    ),
    (
        "[queue]\npublish_timeout_ms = 0",
        "queue.publish_timeout_ms",
        ErrorKind::OutOfRange,
    ),
    (
        "[queue]\ndelivery_limit = 0",
        "queue.delivery_limit",
        ErrorKind::OutOfRange,
    ),
    (
        "[database]\nurl = \"postgres://db/fctf\"",
        "database.url",
        ErrorKind::InvalidValue,
    ),
    (
        "[database]\nmax_connections = 0",
        "database.max_connections",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\nhttp_listen = \"localhost:8080\"",
        "gateway.http_listen",
        ErrorKind::InvalidValue,
    ),
    (
        "[gateway]\ntcp_listen = \"a b\"",
        "gateway.tcp_listen",
        ErrorKind::InvalidValue,
    ),
    (
        "[gateway]\nadmin_listen = \"127.0.0.1\"",
        "gateway.admin_listen",
        ErrorKind::InvalidValue,
    ),
    (
        "[gateway]\ncluster_domain = \"\"",
        "gateway.cluster_domain",
        ErrorKind::InvalidValue,
    ),
    (
        "[gateway]\nnamespace_port = 0",
        "gateway.namespace_port",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\nhttp_token_ip_per_sec = 0",
        "gateway.http_token_ip_per_sec",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\nhttp_token_ip_burst = 0",
        "gateway.http_token_ip_burst",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\nhttp_ip_per_sec = 0",
        "gateway.http_ip_per_sec",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\nhttp_ip_burst = 0",
        "gateway.http_ip_burst",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\nbody_limit_bytes = 2199023255553",
        "gateway.body_limit_bytes",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\ntcp_attempts_per_sec = 0",
        "gateway.tcp_attempts_per_sec",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\ntcp_attempts_burst = 0",
        "gateway.tcp_attempts_burst",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\ntcp_connections_global = 0",
        "gateway.tcp_connections_global",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\ntcp_connections_per_ip = 0",
        "gateway.tcp_connections_per_ip",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\ntcp_connections_per_token = 0",
        "gateway.tcp_connections_per_token",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\ntcp_auth_timeout_ms = 10",
        "gateway.tcp_auth_timeout_ms",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\nroute_cache_ms = 60001",
        "gateway.route_cache_ms",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\nconnect_timeout_ms = 0",
        "gateway.connect_timeout_ms",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\nstore_outage = \"open\"",
        "gateway.store_outage",
        ErrorKind::InvalidValue,
    ),
    (
        "[gateway]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.1/8\"]",
        "gateway.trusted_proxies[1]",
        ErrorKind::InvalidValue,
    ),
    (
        "[gateway]\ntrusted_proxies = [\"proxy.local\"]",
        "gateway.trusted_proxies[0]",
        ErrorKind::InvalidValue,
    ),
    (
        "[gateway]\ntrusted_proxies = \"10.0.0.0/8\"",
        "gateway.trusted_proxies",
        ErrorKind::WrongType,
    ),
    (
        "[gateway]\ndrain_secs = 3601",
        "gateway.drain_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\nstarting_hold_ms = 30001",
        "gateway.starting_hold_ms",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\ninstance_host_suffix = \"inst example.org\"",
        "gateway.instance_host_suffix",
        ErrorKind::InvalidValue,
    ),
    (
        "[gateway]\nproxy_protocol = \"yes\"",
        "gateway.proxy_protocol",
        ErrorKind::WrongType,
    ),
    (
        "[gateway]\ntls_cert_file = \"/nowhere/cert.pem\"",
        "gateway.tls_cert_file",
        ErrorKind::Unreadable,
    ),
    (
        "[gateway]\ntls_key_file = 5",
        "gateway.tls_key_file",
        ErrorKind::WrongType,
    ),
    (
        "[gateway]\ntls_detect_ms = 5",
        "gateway.tls_detect_ms",
        ErrorKind::OutOfRange,
    ),
    (
        "[gateway]\ntls_handshake_timeout_ms = 50",
        "gateway.tls_handshake_timeout_ms",
        ErrorKind::OutOfRange,
    ),
    (
        "[contestant]\nlisten = \"a b\"",
        "contestant.listen",
        ErrorKind::InvalidValue,
    ),
    (
        "[contestant]\nadmin_listen = \"a b\"",
        "contestant.admin_listen",
        ErrorKind::InvalidValue,
    ),
    (
        "[contestant]\npublic_url = \"ftp://x\"",
        "contestant.public_url",
        ErrorKind::InvalidValue,
    ),
    (
        "[contestant]\ndeployment_center_url = \"ftp://x\"",
        "contestant.deployment_center_url",
        ErrorKind::InvalidValue,
    ),
    (
        "[contestant]\nsession_ttl_secs = 31536001",
        "contestant.session_ttl_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[contestant]\nregistration_open = \"yes\"",
        "contestant.registration_open",
        ErrorKind::WrongType,
    ),
    (
        "[contestant]\nmax_users = 10000001",
        "contestant.max_users",
        ErrorKind::OutOfRange,
    ),
    (
        "[contestant]\npassword_min_len = 129",
        "contestant.password_min_len",
        ErrorKind::OutOfRange,
    ),
    (
        "[contestant]\nteam_size = 1001",
        "contestant.team_size",
        ErrorKind::OutOfRange,
    ),
    (
        "[contestant]\napi_ip_per_sec = 1000001",
        "contestant.api_ip_per_sec",
        ErrorKind::OutOfRange,
    ),
    (
        "[contestant]\napi_ip_burst = 10000001",
        "contestant.api_ip_burst",
        ErrorKind::OutOfRange,
    ),
    (
        "[contestant]\napi_user_per_sec = 1000001",
        "contestant.api_user_per_sec",
        ErrorKind::OutOfRange,
    ),
    (
        "[contestant]\napi_user_burst = 10000001",
        "contestant.api_user_burst",
        ErrorKind::OutOfRange,
    ),
    (
        "[contestant]\nwrong_flags_per_min = 10001",
        "contestant.wrong_flags_per_min",
        ErrorKind::OutOfRange,
    ),
    (
        "[contestant]\ntrusted_proxies = [\"10.0.0.1/8\"]",
        "contestant.trusted_proxies[0]",
        ErrorKind::InvalidValue,
    ),
    (
        "[contestant]\nfiles_dir = \"a b\"",
        "contestant.files_dir",
        ErrorKind::InvalidValue,
    ),
    (
        "[contestant]\nmax_upload_bytes = 1023",
        "contestant.max_upload_bytes",
        ErrorKind::OutOfRange,
    ),
    (
        "[deployment]\nlisten = \"a b\"",
        "deployment.listen",
        ErrorKind::InvalidValue,
    ),
    (
        "[deployment]\ninstances_per_team = 1001",
        "deployment.instances_per_team",
        ErrorKind::OutOfRange,
    ),
    (
        "[deployment]\nprovisional_ttl_secs = 86401",
        "deployment.provisional_ttl_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[deployment]\ndefault_lifetime_secs = 604801",
        "deployment.default_lifetime_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[deployment]\nextend_secs = 604801",
        "deployment.extend_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[deployment]\nextend_window_secs = 604801",
        "deployment.extend_window_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[deployment]\nextend_max = 101",
        "deployment.extend_max",
        ErrorKind::OutOfRange,
    ),
    (
        "[deployment]\npublic_http_url = \"ftp://x\"",
        "deployment.public_http_url",
        ErrorKind::InvalidValue,
    ),
    (
        "[deployment]\npublic_tcp_host = \"a b\"",
        "deployment.public_tcp_host",
        ErrorKind::InvalidValue,
    ),
    (
        "[deployment]\npublic_tcp_port = 65536",
        "deployment.public_tcp_port",
        ErrorKind::OutOfRange,
    ),
    (
        "[consumer]\nprefetch = 1001",
        "consumer.prefetch",
        ErrorKind::OutOfRange,
    ),
    (
        "[consumer]\nbudget = 100001",
        "consumer.budget",
        ErrorKind::OutOfRange,
    ),
    (
        "[consumer]\nretry_base_ms = 600001",
        "consumer.retry_base_ms",
        ErrorKind::OutOfRange,
    ),
    (
        "[consumer]\nretry_max_ms = 3600001",
        "consumer.retry_max_ms",
        ErrorKind::OutOfRange,
    ),
    (
        "[consumer]\nmetrics_listen = \"localhost:9103\"",
        "consumer.metrics_listen",
        ErrorKind::InvalidValue,
    ),
    (
        "[runtime]\nkind = \"docker\"",
        "runtime.kind",
        ErrorKind::InvalidValue,
    ),
    (
        "[runtime]\nlocal_host = \"a b\"",
        "runtime.local_host",
        ErrorKind::InvalidValue,
    ),
    (
        "[runtime]\nlocal_state_dir = \"a b\"",
        "runtime.local_state_dir",
        ErrorKind::InvalidValue,
    ),
    (
        "[runtime]\nlocal_ready_timeout_secs = 3601",
        "runtime.local_ready_timeout_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[runtime]\nplatform_namespace = \"a b\"",
        "runtime.platform_namespace",
        ErrorKind::InvalidValue,
    ),
    (
        "[runtime]\nimage_pull_secret = \"a b\"",
        "runtime.image_pull_secret",
        ErrorKind::InvalidValue,
    ),
    (
        "[runtime]\nargo_namespace = \"a b\"",
        "runtime.argo_namespace",
        ErrorKind::InvalidValue,
    ),
    (
        "[runtime]\njob_ttl_after_finished_secs = 86401",
        "runtime.job_ttl_after_finished_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[listener]\nresync_secs = 3601",
        "listener.resync_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[listener]\nshards = 257",
        "listener.shards",
        ErrorKind::OutOfRange,
    ),
    (
        "[listener]\nghost_grace_secs = 86401",
        "listener.ghost_grace_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[listener]\norphan_strikes = 101",
        "listener.orphan_strikes",
        ErrorKind::OutOfRange,
    ),
    (
        "[listener]\nimage_pull_grace_secs = 86401",
        "listener.image_pull_grace_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[listener]\ncrash_restarts = 1001",
        "listener.crash_restarts",
        ErrorKind::OutOfRange,
    ),
    (
        "[listener]\ncreating_grace_secs = 86401",
        "listener.creating_grace_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[listener]\nnot_ready_grace_secs = 86401",
        "listener.not_ready_grace_secs",
        ErrorKind::OutOfRange,
    ),
    (
        "[listener]\nmetrics_listen = \"9104\"",
        "listener.metrics_listen",
        ErrorKind::InvalidValue,
    ),
];

#[test]
fn every_field_refuses_a_bad_value_with_its_key_path() {
    for (text, path, kind) in FIELD_CASES {
        let error = single_error(text);
        assert_eq!(&error.path, path, "in:\n{text}");
        assert_eq!(&error.kind, kind, "in:\n{text}\n{error}");
        assert!(
            error.to_string().starts_with(&format!("{path}: ")),
            "{error}"
        );
    }
}

#[test]
fn the_field_cases_cover_every_documented_field() {
    let mut documented = BTreeSet::new();
    let mut section = String::new();
    for line in config::reference_markdown().lines() {
        if let Some(name) = line
            .strip_prefix("## `[")
            .and_then(|l| l.strip_suffix("]`"))
        {
            section = name.to_owned();
        } else if let Some(row) = line.strip_prefix("| `") {
            let key = row.split('`').next().unwrap();
            documented.insert(format!("{section}.{key}"));
        }
    }
    let covered: BTreeSet<String> = FIELD_CASES
        .iter()
        .map(|(_, path, _)| path.split('[').next().unwrap().to_owned())
        .collect();
    assert!(documented.len() >= 20, "{documented:?}");
    assert_eq!(
        documented, covered,
        "each field needs a case in FIELD_CASES"
    );
}

#[test]
fn choice_mistakes_suggest_the_closest_word() {
    let error = single_error("[store]\nbackend = \"redsi\"");
    assert_eq!(
        error.to_string(),
        "store.backend: must be one of \"memory\", \"redis\", got \"redsi\" (did you mean \"redis\"?)"
    );
}

#[test]
fn unknown_keys_and_sections_are_mistakes_with_suggestions() {
    let error = single_error("[store]\nredis_ulr = \"redis://127.0.0.1:6379\"");
    assert_eq!(error.path, "store.redis_ulr");
    assert_eq!(error.kind, ErrorKind::UnknownKey);
    assert_eq!(error.hint.as_deref(), Some("did you mean `redis_url`?"));

    let error = single_error("[stroe]\nbackend = \"memory\"");
    assert_eq!(error.path, "stroe");
    assert_eq!(error.hint.as_deref(), Some("did you mean `store`?"));

    let error = single_error("[frontend]\nport = 1");
    assert_eq!(error.kind, ErrorKind::UnknownKey);
    assert!(error.hint.unwrap().starts_with("known: tokens, signing"));

    let error = single_error("store = 5");
    assert_eq!(
        (error.path.as_str(), error.kind),
        ("store", ErrorKind::WrongType)
    );
}

#[test]
fn syntax_errors_say_where() {
    // An unterminated string is found where the line ends.
    let error = single_error("[store]\ntimeout_ms = 500\nkey_prefix = \"unterminated\n");
    assert_eq!(
        error.kind,
        ErrorKind::Syntax {
            line: 3,
            column: 27
        }
    );
    assert!(
        error
            .to_string()
            .starts_with("line 3, column 27: invalid TOML"),
        "{error}"
    );
    // Columns count characters, not bytes.
    let error = single_error("[store]\nkey_prefix = \"é\" x\n");
    assert_eq!(
        error.kind,
        ErrorKind::Syntax {
            line: 2,
            column: 18
        },
        "{error}"
    );
}

#[test]
fn three_mistakes_in_three_sections_are_all_reported() {
    let text = "\
[tokens]
skew_secs = 900

[store]
backend = \"redsi\"

[queue]
max_length = 0
";
    let errors = errors(text, &MapSource::new());
    assert_eq!(
        errors.paths(),
        ["tokens.skew_secs", "store.backend", "queue.max_length"],
        "{errors}"
    );
    let shown = errors.to_string();
    assert_eq!(shown.lines().count(), 3, "one mistake per line:\n{shown}");
}

fn key_file_source() -> MapSource {
    MapSource::new()
        .with_file("/etc/fctf/k1.key", format!("{SECRET_A}\n"))
        .with_file("/etc/fctf/k2.key", SECRET_B)
        .with_file("/etc/fctf/short.key", "0123456789012345678901234567890\n\n")
}

#[test]
fn keys_come_from_secret_files_and_rotate_by_id() {
    let text = r#"
[tokens]
active_kid = "k2"
keys = [
    { kid = "k1", secret_file = "/etc/fctf/k1.key" },
    { kid = "k2", secret_file = "/etc/fctf/k2.key" },
]
[store]
backend = "redis"
[queue]
backend = "rabbitmq"
[signing]
keys = [{ kid = "s1", secret_file = "/etc/fctf/k2.key" }]
"#;
    let config = config::load(text, &key_file_source()).unwrap();
    assert!(!config.is_embedded());
    assert_eq!(
        config.tokens.keys[0].origin(),
        &KeyOrigin::File("/etc/fctf/k1.key".into())
    );
    let active = config.tokens.active_key().unwrap();
    assert_eq!(active.kid(), "k2");

    // The file's trailing newline is not part of the secret: a key built from the bare secret
    // signs tokens this config verifies.
    let bare = token::TokenKey::new("k1", SECRET_A.as_bytes()).unwrap();
    let verifier = config.tokens.verifier().unwrap();
    assert!(
        verifier
            .verify(&token::mint(&bare, &claims("k1")).unwrap(), 1_500)
            .is_ok()
    );
    assert!(
        verifier
            .verify(&token::mint(active, &claims("k2")).unwrap(), 1_500)
            .is_ok()
    );
}

#[test]
fn relative_secret_files_are_relative_to_the_config_file() {
    let source = MapSource::new()
        .with_file(
            "/srv/fctf/fctf.toml",
            "[tokens]\nkeys = [{ kid = \"k1\", secret_file = \"keys/k1\" }]\n",
        )
        .with_file("/srv/fctf/keys/k1", SECRET_A);
    let config = config::load_file(Path::new("/srv/fctf/fctf.toml"), &source).unwrap();
    assert_eq!(
        config.tokens.keys[0].origin(),
        &KeyOrigin::File("/srv/fctf/keys/k1".into())
    );
}

#[test]
fn key_list_mistakes_are_each_reported_at_their_entry() {
    let text = r#"
[tokens]
keys = [
    { kid = "k1", secret_file = "/etc/fctf/missing.key" },
    { kid = "k2", secret_file = "/etc/fctf/short.key" },
    { kid = "k3", secret_file = "/etc/fctf/k1.key", secret = "also inline, which is one too many" },
    { kid = "k4" },
    { kid = "k2", secret_file = "/etc/fctf/k2.key" },
    { kid = "bad kid", secret_file = "/etc/fctf/k2.key" },
    { kid = "k7", secretfile = "/etc/fctf/k2.key" },
    { secret_file = "/etc/fctf/k2.key" },
]
"#;
    let errors = errors(text, &key_file_source());
    let found: Vec<(&str, ErrorKind)> = errors.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    assert_eq!(
        found,
        [
            ("tokens.keys[0].secret_file", ErrorKind::Unreadable),
            ("tokens.keys[1].secret_file", ErrorKind::InvalidValue),
            ("tokens.keys[2]", ErrorKind::Conflict),
            ("tokens.keys[3].secret_file", ErrorKind::Missing),
            ("tokens.keys[4].kid", ErrorKind::Conflict),
            ("tokens.keys[5].kid", ErrorKind::InvalidValue),
            ("tokens.keys[6].secretfile", ErrorKind::UnknownKey),
            ("tokens.keys[6].secret_file", ErrorKind::Missing),
            ("tokens.keys[7].kid", ErrorKind::Missing),
        ],
        "{errors}"
    );
    let shown = errors.to_string();
    assert!(
        shown.contains("tokens.keys[1].secret_file: secret of key \"k2\" is 31 bytes"),
        "{shown}"
    );
    assert!(shown.contains("did you mean `secret_file`?"), "{shown}");
    assert!(
        shown.contains("cannot read /etc/fctf/missing.key"),
        "{shown}"
    );
}

#[test]
fn the_active_kid_must_name_a_key() {
    let text = "[tokens]\nactive_kid = \"k9\"\nkeys = [{ kid = \"k1\", secret_file = \"/etc/fctf/k1.key\" }]";
    let errors = errors(text, &key_file_source());
    assert_eq!(errors.len(), 1, "{errors}");
    assert_eq!(errors.0[0].path, "tokens.active_kid");
    assert_eq!(errors.0[0].kind, ErrorKind::Conflict);
    assert_eq!(errors.0[0].hint.as_deref(), Some("configured: k1"));
}

#[test]
fn keys_are_required_once_several_processes_share_state() {
    let errors = errors("[store]\nbackend = \"redis\"", &MapSource::new());
    assert_eq!(errors.paths(), ["tokens.keys", "signing.keys"], "{errors}");
    assert!(errors.iter().all(|e| e.kind == ErrorKind::Missing));
}

#[test]
fn inline_secrets_work_but_never_show() {
    let text = format!(
        "[tokens]\nkeys = [{{ kid = \"k1\", secret = \"{SECRET_A}\" }}]\n\
         [queue]\namqp_url = \"amqp://fctf:hunter2hunter2@mq.internal:5672\"\n"
    );
    let config = config::load(&text, &MapSource::new()).unwrap();
    assert_eq!(*config.tokens.keys[0].origin(), KeyOrigin::Inline);
    assert_eq!(
        config.queue.amqp_url.as_str(),
        "amqp://fctf:hunter2hunter2@mq.internal:5672"
    );
    let shown = format!("{config:?}\n{}\n{:#?}", config.redacted_toml(), config);
    for secret in [SECRET_A, "hunter2"] {
        assert!(!shown.contains(secret), "secret leaked:\n{shown}");
    }
    assert!(
        config
            .redacted_toml()
            .contains("amqp://fctf:***@mq.internal:5672")
    );
    assert!(config.redacted_toml().contains("secret = \"<redacted>\""));
}

#[test]
fn secrets_never_show_in_mistakes() {
    let short = "tooshort-but-still-secret";
    let text = format!(
        "[tokens]\nkeys = [{{ kid = \"k1\", secret = \"{short}\" }}]\n\
         [store]\nredis_url = \"http://user:hunter2@cache\"\n"
    );
    let env = MapSource::new().with_env(
        "FCTF_SIGNING__KEYS",
        format!("[{{ kid = \"s1\", secret = {short} }}]"),
    );
    let errors = errors(&text, &env);
    assert_eq!(
        errors.paths(),
        ["tokens.keys[0].secret", "signing.keys", "store.redis_url"],
        "{errors}"
    );
    let shown = format!("{errors}\n{errors:?}");
    assert!(!shown.contains(short), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn the_redacted_toml_shows_every_field_in_force() {
    let config = load("[store]\ntimeout_ms = 250\n").unwrap();
    let shown = config.redacted_toml();
    assert!(shown.contains("[store]\nbackend = \"memory\"\n"), "{shown}");
    assert!(shown.contains("timeout_ms = 250\n"), "{shown}");
    assert!(
        shown.contains("# keys: not set (a random key was generated"),
        "{shown}"
    );
}

#[test]
fn environment_overrides_win_over_the_file() {
    let source = MapSource::new()
        .with_env("FCTF_STORE__TIMEOUT_MS", "250")
        .with_env("FCTF_STORE__REDIS_URL", "redis://10.1.2.3:6380")
        .with_env("FCTF_QUEUE__BACKEND", "rabbitmq")
        .with_env(
            "FCTF_TOKENS__KEYS",
            r#"[{ kid = "k1", secret_file = "/etc/fctf/k1.key" }]"#,
        )
        .with_env(
            "FCTF_SIGNING__KEYS",
            r#"[{ kid = "s1", secret_file = "/etc/fctf/k2.key" }]"#,
        )
        .with_env("FCTF_TEST_REDIS_URL", "the test suite's, not config")
        .with_env("PATH", "/usr/bin")
        .with_file("/etc/fctf/k1.key", SECRET_A)
        .with_file("/etc/fctf/k2.key", SECRET_B);
    let config = config::load("[store]\ntimeout_ms = 900\n", &source).unwrap();
    assert_eq!(config.store.timeout_ms, 250);
    assert_eq!(config.store.redis_url.as_str(), "redis://10.1.2.3:6380");
    assert_eq!(config.queue.backend, QueueBackend::RabbitMq);
    assert_eq!(config.tokens.keys[0].kid(), "k1");
    assert!(!config.is_embedded());
}

#[test]
fn a_mistyped_environment_variable_is_a_mistake() {
    for (var, suggestion) in [
        ("FCTF_STORE__REDIS_ULR", "FCTF_STORE__REDIS_URL"),
        ("FCTF_STORE_REDIS_URL", "FCTF_STORE__REDIS_URL"),
        ("FCTF_QUEUE__MAXLENGTH", "FCTF_QUEUE__MAX_LENGTH"),
    ] {
        let errors = errors("", &MapSource::new().with_env(var, "x"));
        assert_eq!(errors.len(), 1, "{errors}");
        let error = &errors.0[0];
        assert_eq!(
            (error.path.as_str(), error.kind),
            (var, ErrorKind::UnknownEnvVar)
        );
        assert_eq!(
            error.hint.as_deref(),
            Some(format!("did you mean {suggestion}?").as_str())
        );
    }
    let errors = errors(
        "",
        &MapSource::new().with_env("FCTF_BILLING__QUOTA_CURRENCY", "x"),
    );
    assert!(
        errors.0[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("FCTF_<SECTION>__<FIELD>")
    );
}

#[test]
fn bad_environment_values_name_their_variable() {
    let source = MapSource::new()
        .with_env("FCTF_TOKENS__SKEW_SECS", "thirty")
        .with_env("FCTF_QUEUE__MAX_LENGTH", "0");
    let errors = errors("", &source);
    assert_eq!(
        errors.paths(),
        ["tokens.skew_secs", "queue.max_length"],
        "{errors}"
    );
    assert_eq!(errors.0[0].kind, ErrorKind::WrongType);
    assert_eq!(
        errors.0[0].env_var.as_deref(),
        Some("FCTF_TOKENS__SKEW_SECS")
    );
    assert_eq!(
        errors.0[1].to_string(),
        "queue.max_length: must be between 1 and 1000000, got 0 [set by FCTF_QUEUE__MAX_LENGTH]"
    );
}

#[test]
fn an_unreadable_config_file_is_one_mistake() {
    let errors = config::load_file(Path::new("/nowhere/fctf.toml"), &MapSource::new()).unwrap_err();
    assert_eq!(errors.paths(), ["/nowhere/fctf.toml"]);
    assert_eq!(errors.0[0].kind, ErrorKind::Unreadable);
}

#[test]
fn docs_configuration_md_matches_the_code() {
    assert!(
        repo_file("docs/configuration.md") == config::reference_markdown(),
        "docs/configuration.md is out of date: run `fctf config-docs > docs/configuration.md`"
    );
}

#[test]
fn fctf_example_toml_matches_the_code_and_loads() {
    let example = repo_file("fctf.example.toml");
    assert!(
        example == config::example_toml(),
        "fctf.example.toml is out of date: run `fctf config-docs --example > fctf.example.toml`"
    );
    let config = load(&example).unwrap();
    assert_eq!(config.queue.exchange, "deployment_exchange");
    // Every field is in it, set to its default or (the key lists) as a commented sample.
    for line in config::reference_markdown()
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
    {
        let key = line.split('`').next().unwrap();
        assert!(
            example
                .lines()
                .any(|l| l.starts_with(&format!("{key} = "))
                    || l.starts_with(&format!("# {key} = "))),
            "{key} is missing from fctf.example.toml"
        );
    }
}

#[test]
fn the_commented_samples_of_the_example_load_when_uncommented() {
    let uncommented: String = config::example_toml()
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with("keys = ") => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let source = MapSource::new()
        .with_file("/etc/fctf/token-k1.key", SECRET_A)
        .with_file("/etc/fctf/signing-s1.key", SECRET_B);
    let config = config::load(&uncommented, &source).unwrap();
    assert_eq!(
        config.tokens.keys[0].origin(),
        &KeyOrigin::File("/etc/fctf/token-k1.key".into())
    );
    assert_eq!(config.signing.keys[0].kid(), "s1");
}
