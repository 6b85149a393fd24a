//! The control plane's config sections: the Contestant Service, the Deployment Center, the
//! Deployment Consumer, the runtimes and the Deployment Listener. Declared like the others in
//! `sections.rs` (one line per field, documented here, rendered into `docs/configuration.md`).

use std::time::Duration;

use ipnet::IpNet;

use super::schema::config_section;
use super::values::{ListenAddr, Name, Range, RuntimeKind, ServiceUrl, Url};

config_section! {
    /// The Contestant Service: the players' REST API (CTFd's `/api/v1` shapes), the admin REST
    /// API and the portal. Contest settings an admin changes at runtime (start, end, freeze,
    /// registration) live in the database; the values here are their first defaults.
    pub struct ContestantConfig in "contestant" {
        /// Address of the API listener (`IP:PORT`).
        listen: String = "0.0.0.0:8000".to_owned(), check ListenAddr;
        /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
        admin_listen: String = "127.0.0.1:9101".to_owned(), check ListenAddr;
        /// The address players use to reach this service (links in answers and in the portal).
        public_url: ServiceUrl = ServiceUrl::new("http://127.0.0.1:8000"), check Url(&["http", "https"]);
        /// Where the Deployment Center listens, for instance start, stop and status.
        deployment_center_url: ServiceUrl = ServiceUrl::new("http://127.0.0.1:8081"),
            check Url(&["http", "https"]);
        /// How long a login session lasts, in seconds.
        session_ttl_secs: u64 = 7 * 24 * 3600, check Range(60, 365 * 24 * 3600);
        /// Whether players may register themselves (the first default; admins change it at
        /// runtime).
        registration_open: bool = true;
        /// Most users that may register; 0 for no cap.
        max_users: u32 = 0, check Range(0, 10_000_000);
        /// Shortest password accepted at registration and password change.
        password_min_len: u32 = 8, check Range(4, 128);
        /// Most members of one team.
        team_size: u32 = 4, check Range(1, 1000);
        /// API requests per second allowed from one client address.
        api_ip_per_sec: u32 = 50, check Range(1, 1_000_000);
        /// Burst of `api_ip_per_sec`.
        api_ip_burst: u32 = 200, check Range(1, 10_000_000);
        /// API requests per second allowed to one signed-in user.
        api_user_per_sec: u32 = 20, check Range(1, 1_000_000);
        /// Burst of `api_user_per_sec`.
        api_user_burst: u32 = 100, check Range(1, 10_000_000);
        /// Wrong flags one team may submit to one challenge per minute.
        wrong_flags_per_min: u32 = 10, check Range(1, 10_000);
        /// Networks of the proxies in front of the service; only these may name the client in
        /// `X-Forwarded-For`. Empty: the client is always the TCP peer.
        trusted_proxies: Vec<IpNet> = Vec::new();
        /// Where challenge files are stored (a directory; created when missing).
        files_dir: String = "data/files".to_owned(), check Name { max: 4096, allow_empty: false };
        /// Most bytes of files one admin upload may carry (`POST /api/v1/files`, multipart or
        /// base64 JSON); a larger upload is refused with 413 and nothing is stored.
        max_upload_bytes: u64 = 100 * 1024 * 1024, check Range(1024, 16 * 1024 * 1024 * 1024);
    }
}

impl ContestantConfig {
    /// [`Self::session_ttl_secs`] as a duration.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }
}

config_section! {
    /// The Deployment Center: the one control API for instance start, stop, status and logs.
    /// Every call into it is signed (`[signing]`).
    pub struct DeploymentConfig in "deployment" {
        /// Address of its listener (`IP:PORT`); keep it on a private network.
        listen: String = "127.0.0.1:8081".to_owned(), check ListenAddr;
        /// Instances one team may hold at once (the first default; admins change it at runtime
        /// and the Contestant Service sends the value in force with each start).
        instances_per_team: u32 = 3, check Range(1, 1000);
        /// How long a start may wait in the queue and deploy before it is given up, in seconds:
        /// the provisional state's TTL and the job's expiry.
        provisional_ttl_secs: u64 = 300, check Range(10, 24 * 3600);
        /// Lifetime of an instance whose challenge sets none, in seconds.
        default_lifetime_secs: u64 = 3600, check Range(60, 7 * 24 * 3600);
        /// Time one extension adds, in seconds.
        extend_secs: u64 = 1800, check Range(60, 7 * 24 * 3600);
        /// An instance may be extended only in its last this many seconds.
        extend_window_secs: u64 = 900, check Range(0, 7 * 24 * 3600);
        /// How many times one instance may be extended.
        extend_max: u32 = 2, check Range(0, 100);
        /// The gateway's HTTP address as players reach it; instance links are built on it.
        public_http_url: ServiceUrl = ServiceUrl::new("http://127.0.0.1:8080"),
            check Url(&["http", "https"]);
        /// Host name players give `nc` for TCP instances.
        public_tcp_host: String = "127.0.0.1".to_owned(), check Name { max: 253, allow_empty: false };
        /// Port players give `nc` for TCP instances.
        public_tcp_port: u16 = 1337, check Range(1, 65535);
    }
}

impl DeploymentConfig {
    /// [`Self::provisional_ttl_secs`] as a duration.
    pub fn provisional_ttl(&self) -> Duration {
        Duration::from_secs(self.provisional_ttl_secs)
    }

    /// [`Self::default_lifetime_secs`] as a duration.
    pub fn default_lifetime(&self) -> Duration {
        Duration::from_secs(self.default_lifetime_secs)
    }
}

config_section! {
    /// The Deployment Consumer: takes deploy jobs from the queue and hands them to the runtime.
    pub struct ConsumerConfig in "consumer" {
        /// Deliveries the broker sends before the consumer acknowledges any (QoS prefetch).
        prefetch: u16 = 40, check Range(1, 1000);
        /// Most deployments in progress at once (Argo: running workflows; other runtimes:
        /// instances deploying); past it jobs wait unacknowledged.
        budget: u32 = 100, check Range(1, 100_000);
        /// First delay before a failed job is retried, in milliseconds; doubled each attempt.
        retry_base_ms: u64 = 1000, check Range(1, 600_000);
        /// Longest delay between retries, in milliseconds.
        retry_max_ms: u64 = 30_000, check Range(1, 3_600_000);
        /// Address of `fctf consumer`'s metrics listener (`GET /metrics`: jobs taken, settled,
        /// deploy durations; `GET /healthz`).
        metrics_listen: String = "127.0.0.1:9103".to_owned(), check ListenAddr;
    }
}

config_section! {
    /// Where and how challenge instances run.
    pub struct RuntimeConfig in "runtime" {
        /// `local` (child processes on this machine), `kubernetes` or `argo`.
        kind: RuntimeKind = RuntimeKind::Local;
        /// Address the `local` runtime's instances listen on.
        local_host: String = "127.0.0.1".to_owned(), check Name { max: 253, allow_empty: false };
        /// Directory of the `local` runtime's state: one small file per instance, so a
        /// restarted process re-adopts its live instances and reports the dead ones.
        local_state_dir: String = "data/instances".to_owned(), check Name { max: 4096, allow_empty: false };
        /// How long a `local` instance may take to accept connections, in seconds, before it
        /// is Failed.
        local_ready_timeout_secs: u64 = 30, check Range(1, 3600);
        /// Namespace of the platform's own pods (the gateway's, allowed into instances by the
        /// NetworkPolicy) and of the image pull secret copied into each instance namespace.
        platform_namespace: String = "fctf".to_owned(), check Name { max: 63, allow_empty: false };
        /// Name of the image pull secret copied into each instance namespace; empty for none.
        image_pull_secret: String = "global-regcred".to_owned(), check Name { max: 253, allow_empty: true };
        /// Namespace Argo Workflows runs workflows in.
        argo_namespace: String = "argo".to_owned(), check Name { max: 63, allow_empty: false };
        /// Seconds a finished Job is kept before Kubernetes deletes it.
        job_ttl_after_finished_secs: u32 = 60, check Range(0, 86_400);
    }
}

config_section! {
    /// The Deployment Listener: watches what really runs and corrects the state store and the
    /// tracking rows. The stuck-pod rules are the original system's.
    pub struct ListenerConfig in "listener" {
        /// Seconds between full resyncs (a complete list compared with the store and the
        /// database).
        resync_secs: u64 = 30, check Range(1, 3600);
        /// Workers events are sharded to, by instance (order kept per instance).
        shards: u32 = 8, check Range(1, 256);
        /// Seconds a pod without a state record is left alone before it is deleted as a ghost.
        ghost_grace_secs: u64 = 60, check Range(0, 86_400);
        /// Resyncs in a row a tracking row must be seen without an instance before it is closed
        /// as an orphan.
        orphan_strikes: u32 = 2, check Range(1, 100);
        /// Seconds an image pull may fail before the instance is Failed.
        image_pull_grace_secs: u64 = 30, check Range(1, 86_400);
        /// Container restarts after which a crash-looping instance is Failed.
        crash_restarts: u32 = 2, check Range(0, 1000);
        /// Seconds an instance may be being created before it is Failed.
        creating_grace_secs: u64 = 300, check Range(1, 86_400);
        /// Seconds a started instance may stay not ready before it is Failed.
        not_ready_grace_secs: u64 = 180, check Range(1, 86_400);
        /// Address of `fctf listener`'s metrics listener (`GET /metrics`: reconcile passes and
        /// actions by kind, hints, lost races; `GET /healthz`).
        metrics_listen: String = "127.0.0.1:9104".to_owned(), check ListenAddr;
    }
}
