//! The RabbitMQ topology of the deploy queue, declared by one function that the publisher (the
//! Deployment Center) and the consumer both call, so neither side can drift from the other.
//!
//! ```text
//! publisher ──deploy──▶ deployment_exchange (direct, durable)
//!                          │ binding "deploy"
//!                          ▼
//!                       deployment_queue (durable, classic,
//!                          │                x-max-length=300, x-overflow=reject-publish,
//!                          │                x-dead-letter-exchange=deployment_dlx)
//!                          │ rejected / expired
//!                          ▼
//!                       deployment_dlx (fanout, durable) ──▶ deployment_parked (durable, classic,
//!                                                            x-max-length=10000, drop-head)
//! ```
//!
//! Why a classic queue and not a quorum queue is explained, with the measurements, in the
//! [module documentation of `queue`](super).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use serde::{Deserialize, Serialize};

use super::QueueError;

/// Names and bounds of the deploy queue. Every name is configurable (tests use unique ones); the
/// defaults are the seeds' topology.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topology {
    /// Virtual host. Default `fctf_deploy`.
    pub vhost: String,
    /// The direct exchange jobs are published to. Default `deployment_exchange`.
    pub exchange: String,
    /// Routing key of jobs and of the queue's binding. Default `deploy`.
    pub routing_key: String,
    /// The work queue. Default `deployment_queue`.
    pub queue: String,
    /// `x-max-length` of the work queue: at most this many ready (not yet delivered) jobs; a
    /// publish beyond is refused (`x-overflow=reject-publish`). Default 300.
    pub max_length: u32,
    /// The dead-letter exchange (fanout) that rejected and expired jobs go to. Default
    /// `deployment_dlx`.
    pub dead_letter_exchange: String,
    /// The queue parked jobs wait in for an operator. Default `deployment_parked`.
    pub parked_queue: String,
    /// `x-max-length` of the parked queue; beyond it the oldest parked job is dropped, so poison
    /// messages can never fill the broker. Default 10000.
    pub parked_max_length: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            vhost: "fctf_deploy".to_owned(),
            exchange: "deployment_exchange".to_owned(),
            routing_key: "deploy".to_owned(),
            queue: "deployment_queue".to_owned(),
            max_length: 300,
            dead_letter_exchange: "deployment_dlx".to_owned(),
            parked_queue: "deployment_parked".to_owned(),
            parked_max_length: 10_000,
        }
    }
}

/// One mistake in a [`Topology`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyProblem {
    /// The field (as named in the config file).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Every mistake of a [`Topology`] at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid queue topology: {}", describe(.0))]
pub struct InvalidTopology(pub Vec<TopologyProblem>);

fn describe(problems: &[TopologyProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.problem))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A queue argument value, independent of the AMQP client so the arguments are plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgumentValue {
    /// A signed 64-bit integer (AMQP `l`, what RabbitMQ definitions files produce too).
    Int(i64),
    /// A string (AMQP long string).
    Text(String),
}

/// `x-queue-type` of both queues. Stated explicitly so that an existing queue of another type
/// (for example a quorum queue left by an older deployment) fails the declaration loudly.
pub const QUEUE_TYPE: &str = "classic";

impl Topology {
    /// Checks names (non-empty, at most 255 bytes, not in the broker's reserved `amq.` space,
    /// distinct where they must be) and bounds.
    pub fn validate(&self) -> Result<(), InvalidTopology> {
        let mut problems = Vec::new();
        let mut check_name = |field: &'static str, name: &str, may_be_empty: bool| {
            if name.is_empty() && !may_be_empty {
                problems.push(TopologyProblem {
                    field,
                    problem: "must not be empty",
                });
            } else if name.len() > 255 {
                problems.push(TopologyProblem {
                    field,
                    problem: "must be at most 255 bytes (AMQP short string)",
                });
            } else if name.starts_with("amq.") && field != "vhost" && field != "routing_key" {
                problems.push(TopologyProblem {
                    field,
                    problem: "must not start with the reserved prefix `amq.`",
                });
            }
        };
        check_name("vhost", &self.vhost, false);
        check_name("exchange", &self.exchange, false);
        check_name("routing_key", &self.routing_key, true);
        check_name("queue", &self.queue, false);
        check_name("dead_letter_exchange", &self.dead_letter_exchange, false);
        check_name("parked_queue", &self.parked_queue, false);
        if self.max_length == 0 {
            problems.push(TopologyProblem {
                field: "max_length",
                problem: "must be at least 1",
            });
        }
        if self.parked_max_length == 0 {
            problems.push(TopologyProblem {
                field: "parked_max_length",
                problem: "must be at least 1",
            });
        }
        if self.dead_letter_exchange == self.exchange {
            problems.push(TopologyProblem {
                field: "dead_letter_exchange",
                problem: "must differ from exchange (dead letters would loop back)",
            });
        }
        if self.parked_queue == self.queue {
            problems.push(TopologyProblem {
                field: "parked_queue",
                problem: "must differ from queue",
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidTopology(problems))
        }
    }

    /// The arguments of the work queue, exactly as declared.
    pub fn queue_arguments(&self) -> Vec<(&'static str, ArgumentValue)> {
        vec![
            ("x-queue-type", ArgumentValue::Text(QUEUE_TYPE.to_owned())),
            (
                "x-max-length",
                ArgumentValue::Int(i64::from(self.max_length)),
            ),
            // Never `reject-publish-dlx`: a refused job must be an error to its publisher, not a
            // parked message nobody asked for.
            (
                "x-overflow",
                ArgumentValue::Text("reject-publish".to_owned()),
            ),
            (
                "x-dead-letter-exchange",
                ArgumentValue::Text(self.dead_letter_exchange.clone()),
            ),
        ]
    }

    /// The arguments of the parked queue, exactly as declared.
    pub fn parked_queue_arguments(&self) -> Vec<(&'static str, ArgumentValue)> {
        vec![
            ("x-queue-type", ArgumentValue::Text(QUEUE_TYPE.to_owned())),
            (
                "x-max-length",
                ArgumentValue::Int(i64::from(self.parked_max_length)),
            ),
            ("x-overflow", ArgumentValue::Text("drop-head".to_owned())),
        ]
    }
}

fn field_table(arguments: Vec<(&'static str, ArgumentValue)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        let value = match value {
            ArgumentValue::Int(n) => AMQPValue::LongLongInt(n),
            ArgumentValue::Text(s) => AMQPValue::LongString(LongString::from(s)),
        };
        table.insert(key.into(), value);
    }
    table
}

/// Declares the whole topology on `channel`: both exchanges, both queues, both bindings. Idempotent
/// when the broker already holds the same declarations, whichever side ran first.
///
/// When an existing queue or exchange was declared differently (another `x-max-length`, another
/// queue type, …) the broker answers 406 PRECONDITION_FAILED and closes `channel`; that is returned
/// as [`QueueError::TopologyMismatch`] and must stop the process at startup: running against a
/// topology other than the one in the config would silently change the queue's bound or lose the
/// dead-letter route.
pub async fn declare(channel: &Channel, topology: &Topology) -> Result<(), QueueError> {
    topology.validate()?;
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .exchange_declare(
            topology.exchange.as_str().into(),
            ExchangeKind::Direct,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    // Fanout: dead-lettered messages keep their original routing key, and the parked queue must
    // take them whatever it is.
    channel
        .exchange_declare(
            topology.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            topology.parked_queue.as_str().into(),
            durable_queue,
            field_table(topology.parked_queue_arguments()),
        )
        .await?;
    channel
        .queue_bind(
            topology.parked_queue.as_str().into(),
            topology.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            topology.queue.as_str().into(),
            durable_queue,
            field_table(topology.queue_arguments()),
        )
        .await?;
    channel
        .queue_bind(
            topology.queue.as_str().into(),
            topology.exchange.as_str().into(),
            topology.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds_topology() {
        let t = Topology::default();
        assert_eq!(t.vhost, "fctf_deploy");
        assert_eq!(t.exchange, "deployment_exchange");
        assert_eq!(t.routing_key, "deploy");
        assert_eq!(t.queue, "deployment_queue");
        assert_eq!(t.max_length, 300);
        assert_eq!(t.validate(), Ok(()));
        assert_eq!(
            t.queue_arguments(),
            vec![
                ("x-queue-type", ArgumentValue::Text("classic".into())),
                ("x-max-length", ArgumentValue::Int(300)),
                ("x-overflow", ArgumentValue::Text("reject-publish".into())),
                (
                    "x-dead-letter-exchange",
                    ArgumentValue::Text("deployment_dlx".into())
                ),
            ]
        );
    }

    #[test]
    fn overflow_is_never_reject_publish_dlx() {
        let t = Topology::default();
        for (key, value) in t
            .queue_arguments()
            .into_iter()
            .chain(t.parked_queue_arguments())
        {
            assert_ne!(
                (key, value),
                (
                    "x-overflow",
                    ArgumentValue::Text("reject-publish-dlx".into())
                )
            );
        }
    }

    #[test]
    fn validation_reports_every_problem() {
        let t = Topology {
            vhost: String::new(),
            exchange: "amq.direct".into(),
            queue: "q".repeat(256),
            max_length: 0,
            dead_letter_exchange: "amq.direct".into(),
            parked_queue: "q".repeat(256),
            ..Topology::default()
        };
        let Err(InvalidTopology(problems)) = t.validate() else {
            panic!("must be invalid")
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "vhost",
                "exchange",
                "queue",
                "dead_letter_exchange",
                "parked_queue",
                "max_length",
                "dead_letter_exchange",
                "parked_queue"
            ]
        );
    }

    #[test]
    fn deserializes_partially_with_defaults_and_refuses_unknown_keys() {
        let t: Topology = serde_json::from_str(r#"{"queue":"q1","max_length":5}"#).expect("parse");
        assert_eq!(t.queue, "q1");
        assert_eq!(t.max_length, 5);
        assert_eq!(t.exchange, "deployment_exchange");
        assert!(serde_json::from_str::<Topology>(r#"{"max_lenght":5}"#).is_err());
    }
}
