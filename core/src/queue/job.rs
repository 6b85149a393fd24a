//! The deploy job: the one message the Deployment Center publishes and the Deployment Consumer
//! acts on.
//!
//! The wire form is JSON with an explicit `schema` version, so a consumer can tell a message from
//! a newer (or older) publisher apart from a broken one and park it instead of guessing:
//!
//! ```json
//! {"schema":1,"job_id":"…","kind":"start","team":7,"challenge":42,"instance":"…",
//!  "enqueued_at_ms":1700000000000,"expires_at_ms":1700000120000,"spec":{…}}
//! ```
//!
//! Decoding is strict (bounded size, unknown fields rejected, every invariant checked) because a
//! job that is accepted gets deployed: whatever is wrong with it must be found here, before a
//! runtime is asked to run it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{ChallengeId, InstanceId, TeamId};

/// The schema version this code writes and the only one it accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest encoded job accepted by [`DeployJob::decode`] (and produced by
/// [`DeployJob::encode_checked`]). Real jobs are well under 1 KiB; the bound keeps a hostile or
/// broken message from costing the consumer more than a fixed amount of memory and CPU.
pub const MAX_ENCODED_JOB_BYTES: usize = 64 * 1024;

/// A request to start or stop one challenge instance.
///
/// The value is always of the current [`SCHEMA_VERSION`]; the version exists on the wire only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployJob {
    /// Unique per published job: the consumer's deduplication key, so a redelivered job is
    /// recognised and never deploys a second instance.
    pub job_id: Uuid,
    /// What to do.
    pub kind: JobKind,
    /// The team the instance belongs to ([`TeamId::SHARED`] for a shared instance).
    pub team: TeamId,
    /// The challenge to run.
    pub challenge: ChallengeId,
    /// The instance lifetime this job is about; a job for an older instance never touches a newer
    /// one.
    pub instance: InstanceId,
    /// When the Deployment Center published the job (Unix milliseconds). Also the instance's start
    /// time for naming, so every delivery of one job names the same namespace.
    pub enqueued_at_ms: u64,
    /// The stale-intent guard (Unix milliseconds): equal to the end of the provisional state's TTL.
    /// After it, the reservation this job acts on is gone, so the job must not be carried out. The
    /// broker drops (dead-letters) the message at this time too.
    pub expires_at_ms: u64,
}

/// What a [`DeployJob`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Deploy an instance as described.
    Start(DeploySpec),
    /// Tear the instance down.
    Stop,
}

/// Everything a runtime needs to deploy one instance, computed by the Deployment Center from the
/// challenge's metadata, so the consumer never reads the database to deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// The challenge's display name; runtimes derive the namespace slug from it with
    /// [`crate::naming`].
    pub challenge_name: String,
    /// Container image reference (Kubernetes and Argo runtimes).
    pub image: Option<String>,
    /// Program and arguments (the `local` runtime).
    pub command: Option<Vec<String>>,
    /// The port the challenge listens on inside its container or process.
    pub container_port: u16,
    /// CPU limit in millicores.
    pub cpu_millicores: u32,
    /// Memory limit in MiB.
    pub memory_mib: u32,
    /// Run the pod under gVisor (`runtimeClassName: gvisor`).
    pub use_gvisor: bool,
    /// Use the hardened manifest (read-only root, dropped capabilities, …).
    pub harden: bool,
    /// How long the instance may live once running, in seconds.
    pub lifetime_secs: u64,
    /// Extra environment variables for the challenge process. Ordered, so one job always encodes
    /// to the same bytes.
    pub env: BTreeMap<String, String>,
}

/// A job that breaks an invariant of the message (the reason names which one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid deploy job: {0}")]
pub struct InvalidJob(pub &'static str);

/// Why bytes could not be decoded into a [`DeployJob`]. Every kind is permanent: retrying the same
/// bytes gives the same answer, so the consumer dead-letters such a message rather than requeue
/// it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobDecodeError {
    /// Longer than [`MAX_ENCODED_JOB_BYTES`]; not parsed at all.
    #[error("deploy job of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Well-formed JSON with a schema version this code does not speak (for example from a newer
    /// publisher during a rolling upgrade). Parked, it can be replayed by a consumer that does.
    #[error("deploy job has schema version {found}; this consumer reads version {supported}")]
    UnknownSchema {
        /// The version in the message.
        found: u64,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
    /// Not JSON, not an object, a missing or mistyped field, or an unknown field.
    #[error("malformed deploy job: {0}")]
    Malformed(String),
    /// Parsed, but breaks an invariant.
    #[error(transparent)]
    Invalid(#[from] InvalidJob),
}

impl DeployJob {
    /// A start job for a fresh `instance`, published at `now_ms`, stale after `ttl` (the
    /// provisional state's TTL).
    pub fn start(
        team: TeamId,
        challenge: ChallengeId,
        instance: InstanceId,
        spec: DeploySpec,
        now_ms: u64,
        ttl: Duration,
    ) -> Self {
        Self::new(JobKind::Start(spec), team, challenge, instance, now_ms, ttl)
    }

    /// A stop job for `instance`, published at `now_ms`, stale after `ttl`.
    pub fn stop(
        team: TeamId,
        challenge: ChallengeId,
        instance: InstanceId,
        now_ms: u64,
        ttl: Duration,
    ) -> Self {
        Self::new(JobKind::Stop, team, challenge, instance, now_ms, ttl)
    }

    fn new(
        kind: JobKind,
        team: TeamId,
        challenge: ChallengeId,
        instance: InstanceId,
        now_ms: u64,
        ttl: Duration,
    ) -> Self {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        Self {
            job_id: Uuid::new_v4(),
            kind,
            team,
            challenge,
            instance,
            enqueued_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        }
    }

    /// The deploy spec of a start job.
    pub fn spec(&self) -> Option<&DeploySpec> {
        match &self.kind {
            JobKind::Start(spec) => Some(spec),
            JobKind::Stop => None,
        }
    }

    /// True once the job is stale at `now_ms` and must not be carried out.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// Time left before the job is stale, or `None` when it already is. The per-message
    /// expiration the queue gives the message.
    pub fn remaining_ttl(&self, now_ms: u64) -> Option<Duration> {
        let left = self.expires_at_ms.checked_sub(now_ms)?;
        (left > 0).then(|| Duration::from_millis(left))
    }

    /// Checks every invariant [`DeployJob::decode`] checks, so a job is refused before it is
    /// published rather than parked after.
    pub fn validate(&self) -> Result<(), InvalidJob> {
        if self.expires_at_ms <= self.enqueued_at_ms {
            return Err(InvalidJob("expires_at_ms must be after enqueued_at_ms"));
        }
        match &self.kind {
            JobKind::Start(spec) => spec.validate(),
            JobKind::Stop => Ok(()),
        }
    }

    /// The wire form (JSON, current schema). Infallible; see [`DeployJob::encode_checked`] for the
    /// form the queues publish.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&WireOut::from(self))
            .expect("a DeployJob always serializes: plain data with string map keys")
    }

    /// [`DeployJob::encode`] after [`DeployJob::validate`] and the size bound: the bytes are
    /// guaranteed to decode back to this job.
    pub fn encode_checked(&self) -> Result<Vec<u8>, InvalidJob> {
        self.validate()?;
        let bytes = self.encode();
        if bytes.len() > MAX_ENCODED_JOB_BYTES {
            return Err(InvalidJob("encoded job exceeds MAX_ENCODED_JOB_BYTES"));
        }
        Ok(bytes)
    }

    /// Parses the wire form. Input over [`MAX_ENCODED_JOB_BYTES`] is refused unread; a schema
    /// version other than [`SCHEMA_VERSION`] is [`JobDecodeError::UnknownSchema`] whatever the rest
    /// of the message holds; unknown fields are refused.
    pub fn decode(bytes: &[u8]) -> Result<DeployJob, JobDecodeError> {
        if bytes.len() > MAX_ENCODED_JOB_BYTES {
            return Err(JobDecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_ENCODED_JOB_BYTES,
            });
        }
        // The version is read first and on its own: a newer schema may add fields that the strict
        // parse below would call malformed, and "unknown version" must win over that.
        let probe: SchemaProbe =
            serde_json::from_slice(bytes).map_err(|e| JobDecodeError::Malformed(e.to_string()))?;
        if probe.schema != u64::from(SCHEMA_VERSION) {
            return Err(JobDecodeError::UnknownSchema {
                found: probe.schema,
                supported: SCHEMA_VERSION,
            });
        }
        let wire: WireIn =
            serde_json::from_slice(bytes).map_err(|e| JobDecodeError::Malformed(e.to_string()))?;
        let job = DeployJob::try_from(wire)?;
        job.validate()?;
        Ok(job)
    }
}

impl DeploySpec {
    /// Checks what a runtime relies on: something to run, a port, positive limits and lifetime,
    /// environment entries a process can actually receive.
    pub fn validate(&self) -> Result<(), InvalidJob> {
        if self.challenge_name.trim().is_empty() {
            return Err(InvalidJob("spec.challenge_name is empty"));
        }
        if self.image.is_none() && self.command.is_none() {
            return Err(InvalidJob("spec needs an image or a command"));
        }
        if self.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
            return Err(InvalidJob("spec.image is empty"));
        }
        if let Some(command) = &self.command {
            if command.first().is_none_or(|program| program.is_empty()) {
                return Err(InvalidJob("spec.command has no program"));
            }
            if command.iter().any(|arg| arg.contains('\0')) {
                return Err(InvalidJob("spec.command contains a NUL byte"));
            }
        }
        if self.container_port == 0 {
            return Err(InvalidJob("spec.container_port is 0"));
        }
        if self.cpu_millicores == 0 {
            return Err(InvalidJob("spec.cpu_millicores is 0"));
        }
        if self.memory_mib == 0 {
            return Err(InvalidJob("spec.memory_mib is 0"));
        }
        if self.lifetime_secs == 0 {
            return Err(InvalidJob("spec.lifetime_secs is 0"));
        }
        for (name, value) in &self.env {
            // What execve and the Kubernetes API both refuse.
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(InvalidJob("spec.env has an invalid variable name"));
            }
            if value.contains('\0') {
                return Err(InvalidJob("spec.env has a value with a NUL byte"));
            }
        }
        Ok(())
    }
}

// ---- wire form ----

/// The only field read before the version is known. Not `deny_unknown_fields`: every other field
/// is ignored here (but still parsed as JSON, so broken syntax is `Malformed`).
#[derive(Deserialize)]
struct SchemaProbe {
    schema: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireKind {
    Start,
    Stop,
}

/// Serialization view (borrows the job). Field order is the wire order.
#[derive(Serialize)]
struct WireOut<'a> {
    schema: u32,
    job_id: Uuid,
    kind: WireKind,
    team: TeamId,
    challenge: ChallengeId,
    instance: InstanceId,
    enqueued_at_ms: u64,
    expires_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    spec: Option<&'a DeploySpec>,
}

/// Deserialization form; converted (and checked) into a [`DeployJob`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIn {
    // Read again here only so that `deny_unknown_fields` accepts it; the probe already checked it.
    #[allow(dead_code)]
    schema: u64,
    job_id: Uuid,
    kind: WireKind,
    team: TeamId,
    challenge: ChallengeId,
    instance: InstanceId,
    enqueued_at_ms: u64,
    expires_at_ms: u64,
    spec: Option<DeploySpec>,
}

impl<'a> From<&'a DeployJob> for WireOut<'a> {
    fn from(job: &'a DeployJob) -> Self {
        let (kind, spec) = match &job.kind {
            JobKind::Start(spec) => (WireKind::Start, Some(spec)),
            JobKind::Stop => (WireKind::Stop, None),
        };
        WireOut {
            schema: SCHEMA_VERSION,
            job_id: job.job_id,
            kind,
            team: job.team,
            challenge: job.challenge,
            instance: job.instance,
            enqueued_at_ms: job.enqueued_at_ms,
            expires_at_ms: job.expires_at_ms,
            spec,
        }
    }
}

impl TryFrom<WireIn> for DeployJob {
    type Error = InvalidJob;

    fn try_from(wire: WireIn) -> Result<Self, InvalidJob> {
        let kind = match (wire.kind, wire.spec) {
            (WireKind::Start, Some(spec)) => JobKind::Start(spec),
            (WireKind::Start, None) => return Err(InvalidJob("a start job needs a spec")),
            (WireKind::Stop, None) => JobKind::Stop,
            (WireKind::Stop, Some(_)) => return Err(InvalidJob("a stop job carries no spec")),
        };
        Ok(DeployJob {
            job_id: wire.job_id,
            kind,
            team: wire.team,
            challenge: wire.challenge,
            instance: wire.instance,
            enqueued_at_ms: wire.enqueued_at_ms,
            expires_at_ms: wire.expires_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> DeploySpec {
        DeploySpec {
            challenge_name: "Baby Heap".to_owned(),
            image: Some("registry.local/ctf/baby-heap:1".to_owned()),
            command: None,
            container_port: 1337,
            cpu_millicores: 500,
            memory_mib: 256,
            use_gvisor: true,
            harden: true,
            lifetime_secs: 3600,
            env: BTreeMap::from([("FLAG_FORMAT".to_owned(), "FCTF{...}".to_owned())]),
        }
    }

    fn start_job() -> DeployJob {
        DeployJob::start(
            TeamId(7),
            ChallengeId(42),
            InstanceId::new(),
            spec(),
            1_700_000_000_000,
            Duration::from_secs(120),
        )
    }

    /// Decodes the wire form of [`start_job`] after `edit` changed it as a JSON object.
    fn decode_edited(
        edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) -> Result<DeployJob, JobDecodeError> {
        let mut map =
            match serde_json::from_slice(&start_job().encode()).expect("encode gives JSON") {
                serde_json::Value::Object(map) => map,
                other => panic!("not an object: {other}"),
            };
        edit(&mut map);
        DeployJob::decode(&serde_json::to_vec(&map).expect("serialize"))
    }

    #[test]
    fn wire_form_is_pinned() {
        let job = DeployJob {
            job_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            kind: JobKind::Stop,
            team: TeamId(7),
            challenge: ChallengeId(42),
            instance: InstanceId(Uuid::from_u128(0xfeed)),
            enqueued_at_ms: 1_000,
            expires_at_ms: 121_000,
        };
        assert_eq!(
            String::from_utf8(job.encode()).expect("utf-8"),
            concat!(
                r#"{"schema":1,"job_id":"01234567-89ab-cdef-0123-456789abcdef","kind":"stop","#,
                r#""team":7,"challenge":42,"instance":"0000000000000000000000000000feed","#,
                r#""enqueued_at_ms":1000,"expires_at_ms":121000}"#
            )
        );
    }

    #[test]
    fn start_and_stop_round_trip() {
        let start = start_job();
        assert_eq!(DeployJob::decode(&start.encode()), Ok(start.clone()));
        let stop = DeployJob::stop(
            TeamId::SHARED,
            ChallengeId(1),
            InstanceId::new(),
            5,
            Duration::from_millis(10),
        );
        assert_eq!(stop.spec(), None);
        assert_eq!(DeployJob::decode(&stop.encode()), Ok(stop));
        assert_eq!(start.spec(), Some(&spec()));
    }

    #[test]
    fn unknown_schema_is_its_own_error_even_with_new_fields() {
        let decoded = decode_edited(|map| {
            map.insert("schema".to_owned(), 2.into());
            map.insert("priority".to_owned(), "high".into());
        });
        assert_eq!(
            decoded,
            Err(JobDecodeError::UnknownSchema {
                found: 2,
                supported: 1
            })
        );
    }

    #[test]
    fn missing_or_mistyped_schema_is_malformed() {
        assert!(matches!(
            decode_edited(|map| {
                map.remove("schema");
            }),
            Err(JobDecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_edited(|map| {
                map.insert("schema".to_owned(), "1".into());
            }),
            Err(JobDecodeError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_fields_are_refused_at_both_levels() {
        let decoded = decode_edited(|map| {
            map.insert("extra".to_owned(), true.into());
        });
        assert!(matches!(decoded, Err(JobDecodeError::Malformed(m)) if m.contains("extra")));

        let decoded = decode_edited(|map| {
            let spec = map
                .get_mut("spec")
                .and_then(|s| s.as_object_mut())
                .expect("spec");
            spec.insert("privileged".to_owned(), true.into());
        });
        assert!(matches!(decoded, Err(JobDecodeError::Malformed(m)) if m.contains("privileged")));
    }

    #[test]
    fn kind_and_spec_must_agree() {
        assert_eq!(
            decode_edited(|map| {
                map.remove("spec");
            }),
            Err(JobDecodeError::Invalid(InvalidJob(
                "a start job needs a spec"
            )))
        );
        assert_eq!(
            decode_edited(|map| {
                map.insert("kind".to_owned(), "stop".into());
            }),
            Err(JobDecodeError::Invalid(InvalidJob(
                "a stop job carries no spec"
            )))
        );
        assert!(matches!(
            decode_edited(|map| {
                map.insert("kind".to_owned(), "restart".into());
            }),
            Err(JobDecodeError::Malformed(_))
        ));
    }

    #[test]
    fn size_bound_is_checked_before_parsing() {
        let huge = vec![b' '; MAX_ENCODED_JOB_BYTES + 1];
        assert_eq!(
            DeployJob::decode(&huge),
            Err(JobDecodeError::TooLarge {
                len: MAX_ENCODED_JOB_BYTES + 1,
                max: MAX_ENCODED_JOB_BYTES
            })
        );
        let mut job = start_job();
        if let JobKind::Start(spec) = &mut job.kind {
            spec.env
                .insert("BIG".to_owned(), "x".repeat(MAX_ENCODED_JOB_BYTES));
        }
        assert!(job.validate().is_ok());
        assert_eq!(
            job.encode_checked(),
            Err(InvalidJob("encoded job exceeds MAX_ENCODED_JOB_BYTES"))
        );
    }

    #[test]
    fn spec_invariants_are_enforced_on_decode_and_before_publish() {
        type Breakage = fn(&mut DeploySpec);
        let cases: [(&str, Breakage); 9] = [
            ("spec.challenge_name is empty", |s| {
                s.challenge_name = " ".into()
            }),
            ("spec needs an image or a command", |s| s.image = None),
            ("spec.command has no program", |s| s.command = Some(vec![])),
            ("spec.container_port is 0", |s| s.container_port = 0),
            ("spec.cpu_millicores is 0", |s| s.cpu_millicores = 0),
            ("spec.memory_mib is 0", |s| s.memory_mib = 0),
            ("spec.lifetime_secs is 0", |s| s.lifetime_secs = 0),
            ("spec.env has an invalid variable name", |s| {
                s.env.insert("A=B".into(), "c".into());
            }),
            ("spec.env has a value with a NUL byte", |s| {
                s.env.insert("A".into(), "\0".into());
            }),
        ];
        for (reason, break_it) in cases {
            let mut job = start_job();
            if let JobKind::Start(spec) = &mut job.kind {
                break_it(spec);
            }
            assert_eq!(job.encode_checked(), Err(InvalidJob(reason)));
            assert_eq!(
                DeployJob::decode(&job.encode()),
                Err(JobDecodeError::Invalid(InvalidJob(reason)))
            );
        }
    }

    #[test]
    fn ttl_is_the_stale_intent_guard() {
        let job = start_job();
        let t0 = job.enqueued_at_ms;
        assert_eq!(job.expires_at_ms, t0 + 120_000);
        assert_eq!(job.remaining_ttl(t0), Some(Duration::from_secs(120)));
        assert_eq!(
            job.remaining_ttl(t0 + 119_999),
            Some(Duration::from_millis(1))
        );
        assert!(!job.is_expired(t0 + 119_999));
        assert_eq!(job.remaining_ttl(t0 + 120_000), None);
        assert!(job.is_expired(t0 + 120_000));
        assert_eq!(job.remaining_ttl(u64::MAX), None);

        let mut zero = job.clone();
        zero.expires_at_ms = zero.enqueued_at_ms;
        assert_eq!(
            zero.validate(),
            Err(InvalidJob("expires_at_ms must be after enqueued_at_ms"))
        );
    }

    fn arb_text() -> impl Strategy<Value = String> {
        // Any Unicode, including quotes, backslashes and control characters, with at least one
        // non-space character (not NUL, which the spec refuses on purpose).
        "[^\u{0}]{0,12}[^\u{0}\\s][^\u{0}]{0,12}"
    }

    prop_compose! {
        fn arb_spec()(
            challenge_name in arb_text(),
            image in proptest::option::of(arb_text()),
            command in proptest::collection::vec(arb_text(), 1..4),
            use_command in any::<bool>(),
            container_port in 1u16..,
            cpu_millicores in 1u32..,
            memory_mib in 1u32..,
            use_gvisor in any::<bool>(),
            harden in any::<bool>(),
            lifetime_secs in 1u64..,
            env in proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,15}", arb_text(), 0..6),
        ) -> DeploySpec {
            // At least one of image and command, as validate() demands.
            let command = (use_command || image.is_none()).then_some(command);
            DeploySpec {
                challenge_name, image, command, container_port, cpu_millicores, memory_mib,
                use_gvisor, harden, lifetime_secs, env,
            }
        }
    }

    prop_compose! {
        fn arb_job()(
            id in any::<u128>(),
            spec in proptest::option::of(arb_spec()),
            team in any::<i64>(),
            challenge in any::<i64>(),
            instance in any::<u128>(),
            enqueued_at_ms in 0u64..u64::MAX / 2,
            ttl_ms in 1u64..u64::MAX / 2,
        ) -> DeployJob {
            DeployJob {
                job_id: Uuid::from_u128(id),
                kind: spec.map_or(JobKind::Stop, JobKind::Start),
                team: TeamId(team),
                challenge: ChallengeId(challenge),
                instance: InstanceId(Uuid::from_u128(instance)),
                enqueued_at_ms,
                expires_at_ms: enqueued_at_ms + ttl_ms,
            }
        }
    }

    proptest! {
        #[test]
        fn every_valid_job_round_trips(job in arb_job()) {
            let bytes = job.encode_checked().expect("generated jobs are valid");
            prop_assert_eq!(bytes.clone(), job.encode());
            prop_assert_eq!(DeployJob::decode(&bytes), Ok(job));
        }

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = DeployJob::decode(&bytes);
        }

        #[test]
        fn truncated_encodings_are_refused(job in arb_job(), cut in any::<prop::sample::Index>()) {
            let bytes = job.encode();
            let cut = cut.index(bytes.len());
            prop_assert!(DeployJob::decode(&bytes[..cut]).is_err());
        }
    }
}
