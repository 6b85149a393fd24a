//! [`AmqpQueue`]: the deploy queue on RabbitMQ, through lapin.
//!
//! Publishing: every publish `mandatory`, on a channel in confirm mode that it has to itself
//! until its confirm is in, and bounded by the publish timeout; the confirm decides the outcome
//! (ack → `Ok`, ack with the message returned → `Unroutable`, nack → `Full`). Concurrent
//! publishes take different channels from a small pool ([`PUBLISH_CHANNELS`]), so their confirms
//! overlap (the broker confirms them together) instead of waiting one after another, and a
//! returned message or a nack is always about the one message on its channel: lapin attaches a
//! `basic.return` to whichever confirm completes next on the channel, which is only certain to be
//! the returned message's own when nothing else is outstanding there. Consuming: a channel per
//! consumer with `basic.qos(prefetch)` and manual acknowledgements. Reconnection is described in
//! the [module documentation](super).

use std::fmt;
use std::num::NonZeroU16;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use super::{
    DeadLetterReason, Delivery, DeliverySource, DeployJob, Disposition, InvalidJob, JobConsumer,
    JobQueue, ParkedJob, QueueError, QueueStats, Settlement, Topology, declare,
};
use crate::clock;

/// After a failed (re)connect attempt, operations fail at once with
/// [`QueueError::Unavailable`] for this long instead of trying again: a broker that is down is
/// not hammered by every publish, and callers get their answer without waiting.
pub const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// Most publishes awaiting their confirm at once, each on a confirm channel of its own (the
/// channels stay open and are reused). Further publishes wait for one to finish, within their
/// publish timeout. 64 keeps a burst of starts (300 at once) a few confirm rounds long while the
/// broker holds at most 64 channel processes for this connection.
pub const PUBLISH_CHANNELS: usize = 64;

/// The deploy queue on a RabbitMQ broker.
pub struct AmqpQueue {
    uri: AMQPUri,
    topology: Topology,
    publish_timeout: Duration,
    link: Mutex<LinkState>,
    /// Confirm-mode channels with no publish outstanding. A publish takes one for itself and
    /// gives it back once its confirm is in (never after a timeout or an error).
    idle_publishers: std::sync::Mutex<Vec<Channel>>,
    /// One permit per publish in flight: at most [`PUBLISH_CHANNELS`] publishing channels.
    publish_slots: Semaphore,
}

#[derive(Default)]
struct LinkState {
    link: Option<Link>,
    /// Set when a connect attempt starts, cleared when one succeeds: while it is recent, no new
    /// attempt is made (also when the attempt was cancelled by its caller's timeout).
    last_attempt: Option<Instant>,
}

struct Link {
    connection: Arc<Connection>,
}

impl fmt::Debug for AmqpQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URI itself: it holds the password.
        f.debug_struct("AmqpQueue")
            .field("host", &self.uri.authority.host)
            .field("port", &self.uri.authority.port)
            .field("topology", &self.topology)
            .field("publish_timeout", &self.publish_timeout)
            .finish_non_exhaustive()
    }
}

impl AmqpQueue {
    /// Connects to the broker at `amqp_url` (`amqp://user:password@host:port`; the vhost comes
    /// from `topology` — a URL that names another vhost is refused), declares the topology and
    /// enables publisher confirms. `publish_timeout` bounds every publish and also this connect.
    ///
    /// Fails loudly, as a startup check should: [`QueueError::Unavailable`] when the broker does
    /// not answer, [`QueueError::TopologyMismatch`] when it holds a different declaration.
    pub async fn connect(
        amqp_url: &str,
        topology: &Topology,
        publish_timeout: Duration,
    ) -> Result<Self, QueueError> {
        topology.validate()?;
        let uri = broker_uri(amqp_url, &topology.vhost)?;
        let queue = Self {
            uri,
            topology: topology.clone(),
            publish_timeout,
            link: Mutex::new(LinkState::default()),
            idle_publishers: std::sync::Mutex::new(Vec::new()),
            publish_slots: Semaphore::new(PUBLISH_CHANNELS),
        };
        let link = tokio::time::timeout(publish_timeout, queue.open_link())
            .await
            .map_err(|_| {
                QueueError::Unavailable(format!(
                    "no connection to the broker within {publish_timeout:?}"
                ))
            })??;
        queue.link.lock().await.link = Some(link);
        Ok(queue)
    }

    /// Allows `channels` publishes awaiting their confirm at once (at least 1) instead of
    /// [`PUBLISH_CHANNELS`].
    #[must_use]
    pub fn with_publish_channels(mut self, channels: usize) -> Self {
        self.publish_slots = Semaphore::new(channels.max(1));
        self
    }

    /// The topology this queue declared.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Closes the connection cleanly (unsettled deliveries are requeued by the broker). Later
    /// operations reconnect.
    pub async fn close(&self) -> Result<(), QueueError> {
        let link = self.link.lock().await.link.take();
        self.idle().clear();
        let Some(link) = link else {
            return Ok(());
        };
        for attempt in 0..3 {
            match link.connection.close(200, "closing".into()).await {
                Ok(()) => break,
                // lapin fails the connection's close when one of its channels was already
                // closing on its own (a retired publisher, a helper channel); the connection is
                // then closing too, else it is asked again.
                Err(e) if matches!(e.kind(), lapin::ErrorKind::InvalidChannelState(..)) => {
                    if !link.connection.status().connected() {
                        tracing::debug!(error = %e, "deploy queue: a channel was closing with the connection");
                        break;
                    }
                    if attempt == 2 {
                        return Err(e.into());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Connects, declares the topology and keeps the declaring channel, in confirm mode, as the
    /// first idle publishing channel.
    async fn open_link(&self) -> Result<Link, QueueError> {
        let properties =
            ConnectionProperties::default().with_connection_name("fctf deploy queue".into());
        let connection = Connection::connect_uri(self.uri.clone(), properties).await?;
        let publisher = connection.create_channel().await?;
        declare(&publisher, &self.topology).await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        {
            let mut idle = self.idle();
            // Channels of an earlier connection are dead: none of them is kept.
            idle.clear();
            idle.push(publisher);
        }
        Ok(Link {
            connection: Arc::new(connection),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Channel>> {
        // A Vec of handles is never left half-changed.
        self.idle_publishers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The live link, reconnecting if it is gone and the backoff allows.
    async fn live_link<'a>(&self, state: &'a mut LinkState) -> Result<&'a mut Link, QueueError> {
        if state
            .link
            .as_ref()
            .is_some_and(|l| !l.connection.status().connected())
        {
            tracing::warn!("deploy queue: broker connection lost");
            state.link = None;
        }
        if state.link.is_none() {
            if let Some(at) = state.last_attempt {
                let since = at.elapsed();
                if since < RECONNECT_BACKOFF {
                    return Err(QueueError::Unavailable(format!(
                        "no broker connection; next reconnect attempt in {:?}",
                        RECONNECT_BACKOFF - since
                    )));
                }
            }
            state.last_attempt = Some(Instant::now());
            let link = self.open_link().await?;
            tracing::info!("deploy queue: connected to the broker");
            state.last_attempt = None;
            state.link = Some(link);
        }
        state
            .link
            .as_mut()
            .ok_or_else(|| QueueError::Unavailable("no broker connection".to_owned()))
    }

    /// The live connection (reconnecting as [`Self::live_link`] does); the link's lock is held
    /// only for that, not for what the caller then does on the connection.
    async fn connection(&self) -> Result<Arc<Connection>, QueueError> {
        let mut state = self.link.lock().await;
        let link = self.live_link(&mut state).await?;
        Ok(Arc::clone(&link.connection))
    }

    /// A confirm-mode channel for one publish, for the caller alone: an idle one, or a new one
    /// on the live connection. Idle channels the broker or a lost connection closed are dropped
    /// on the way.
    async fn take_publisher(&self) -> Result<Channel, QueueError> {
        loop {
            let Some(channel) = self.idle().pop() else {
                break;
            };
            if channel.status().connected() {
                return Ok(channel);
            }
        }
        let connection = self.connection().await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(channel)
    }

    /// Gives a publishing channel whose confirm is in back to the pool.
    fn return_publisher(&self, channel: Channel) {
        if channel.status().connected() {
            self.idle().push(channel);
        }
    }

    /// Takes a publishing channel out of service and closes it in the background: its confirm
    /// did not come in time (a wedged channel is not reused, and lapin's bookkeeping of the
    /// abandoned confirm goes away with it), or the publish failed on it.
    fn retire_publisher(channel: Channel, why: &'static str) {
        if !channel.status().connected() {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = channel.close(200, why.into()).await {
                tracing::debug!(error = %e, "deploy queue: closing a retired publishing channel failed");
            }
        });
    }

    /// A new channel on the live connection.
    async fn channel(&self) -> Result<Channel, QueueError> {
        let connection = self.connection().await?;
        Ok(connection.create_channel().await?)
    }

    fn no_connection_in_time(&self) -> QueueError {
        QueueError::Unavailable(format!(
            "no broker connection within {:?}",
            self.publish_timeout
        ))
    }

    /// `op` bounded by the publish timeout; a broker that does not answer is `Unavailable`.
    async fn within_timeout<T, E: Into<QueueError>>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, E>>,
    ) -> Result<T, QueueError> {
        match tokio::time::timeout(self.publish_timeout, op).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(QueueError::Unavailable(format!(
                "the broker did not answer {what} within {:?}",
                self.publish_timeout
            ))),
        }
    }

    async fn start_consumer(&self, prefetch: NonZeroU16) -> Result<JobConsumer, QueueError> {
        let channel = self.channel().await?;
        // Per consumer (global = false), which is what RabbitMQ applies to new consumers.
        channel
            .basic_qos(prefetch.get(), BasicQosOptions { global: false })
            .await?;
        let consumer = channel
            .basic_consume(
                self.topology.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(), // no_ack: false — manual acknowledgements
                FieldTable::default(),
            )
            .await?;
        Ok(JobConsumer::new(Box::new(AmqpConsumer {
            _channel: channel,
            consumer,
            finished: None,
        })))
    }

    /// Takes one parked job (get, then ack), each round trip bounded.
    async fn take_one_parked(&self, channel: &Channel) -> Result<Option<ParkedJob>, QueueError> {
        let get = channel.basic_get(
            self.topology.parked_queue.as_str().into(),
            BasicGetOptions { no_ack: false },
        );
        let Some(message) = self.within_timeout("basic.get", get).await? else {
            return Ok(None);
        };
        let delivery = message.delivery;
        let reason = dead_letter_reason(delivery.properties.headers().as_ref());
        let acked = self
            .within_timeout(
                "basic.ack",
                delivery.acker.ack(BasicAckOptions { multiple: false }),
            )
            .await?;
        if !acked {
            return Err(QueueError::Unavailable(
                "the channel closed while taking a parked job".to_owned(),
            ));
        }
        Ok(Some(ParkedJob {
            payload: delivery.data,
            reason,
        }))
    }

    async fn read_stats(&self) -> Result<QueueStats, QueueError> {
        let channel = self.channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let ready = channel
            .queue_declare(
                self.topology.queue.as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await?
            .message_count();
        let parked = channel
            .queue_declare(
                self.topology.parked_queue.as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await?
            .message_count();
        close_quietly(&channel).await;
        Ok(QueueStats { ready, parked })
    }
}

#[async_trait]
impl JobQueue for AmqpQueue {
    async fn publish(&self, job: &DeployJob) -> Result<(), QueueError> {
        let payload = job.encode_checked()?;
        let ttl = job
            .remaining_ttl(clock::unix_now_millis())
            .ok_or(InvalidJob("job expired before it was published"))?;
        let deadline = Instant::now() + self.publish_timeout;
        // Every slot busy for the whole timeout means the broker is not confirming: the same
        // answer as a confirm that does not come.
        let _slot = tokio::time::timeout_at(deadline, self.publish_slots.acquire())
            .await
            .map_err(|_| QueueError::Timeout(self.publish_timeout))?
            .map_err(|_| QueueError::Unavailable("the deploy queue is closed".to_owned()))?;
        let channel = tokio::time::timeout_at(deadline, self.take_publisher())
            .await
            .map_err(|_| self.no_connection_in_time())??;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(job.job_id.to_string().into())
            .with_timestamp(job.enqueued_at_ms / 1000)
            .with_expiration(ttl.as_millis().to_string().into());
        // No lock is held here: other publishes go out on other channels meanwhile.
        let confirmation = tokio::time::timeout_at(deadline, async {
            channel
                .basic_publish(
                    self.topology.exchange.as_str().into(),
                    self.topology.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &payload,
                    properties,
                )
                .await?
                .await
        })
        .await;
        let confirmation = match confirmation {
            Ok(Ok(confirmation)) => confirmation,
            Ok(Err(e)) => {
                Self::retire_publisher(channel, "publish failed");
                return Err(publish_error(e));
            }
            Err(_) => {
                Self::retire_publisher(channel, "publish confirm timed out");
                return Err(QueueError::Timeout(self.publish_timeout));
            }
        };
        // The confirm is in and nothing else was outstanding on the channel: reusable.
        self.return_publisher(channel);
        outcome(confirmation, &job.job_id.to_string())
    }

    async fn consume(&self, prefetch: NonZeroU16) -> Result<JobConsumer, QueueError> {
        self.within_timeout("basic.consume", self.start_consumer(prefetch))
            .await
    }

    async fn take_parked(&self, max: usize) -> Result<Vec<ParkedJob>, QueueError> {
        let channel = self.within_timeout("channel.open", self.channel()).await?;
        let mut parked = Vec::new();
        while parked.len() < max {
            match self.take_one_parked(&channel).await {
                Ok(Some(job)) => parked.push(job),
                Ok(None) => break,
                Err(e) if parked.is_empty() => return Err(e),
                // The jobs already taken are gone from the broker: return them, not the error.
                Err(e) => {
                    tracing::warn!(error = %e, taken = parked.len(), "deploy queue: taking parked jobs stopped early");
                    break;
                }
            }
        }
        close_quietly(&channel).await;
        Ok(parked)
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.within_timeout("queue.declare (passive)", self.read_stats())
            .await
    }
}

/// What a publish's confirm means for the job whose message id is `message_id`.
fn outcome(confirmation: Confirmation, message_id: &str) -> Result<(), QueueError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        // With publisher confirms, an unroutable mandatory message is returned *and* acked:
        // the ack alone would read as success.
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            let returned_id = returned
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string());
            if returned_id.as_deref() != Some(message_id) {
                // Cannot happen with one publish per channel at a time; if it ever did, the
                // safe reading is still "not enqueued".
                tracing::error!(
                    ?returned_id,
                    message_id,
                    "deploy queue: a returned message does not match its publish"
                );
            }
            Err(QueueError::Unroutable(format!(
                "{} {}",
                returned.reply_code, returned.reply_text
            )))
        }
        // With this topology the broker nacks only because of `x-overflow=reject-publish`
        // (or an internal queue failure, which equally means "not enqueued").
        Confirmation::Nack(None) => Err(QueueError::Full),
        Confirmation::NotRequested => Err(QueueError::Broker(
            "publisher confirms are not enabled on the publishing channel".to_owned(),
        )),
    }
}

/// Closes a helper channel without waiting long for the broker (dropping it closes it anyway).
async fn close_quietly(channel: &Channel) {
    let close = channel.close(200, "done".into());
    match tokio::time::timeout(Duration::from_secs(1), close).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "deploy queue: closing a helper channel failed"),
        Err(_) => tracing::debug!("deploy queue: closing a helper channel timed out"),
    }
}

/// A consumer and the channel it owns; dropping both closes the channel, and the broker requeues
/// whatever was delivered on it and not settled.
struct AmqpConsumer {
    _channel: Channel,
    consumer: lapin::Consumer,
    /// Why the consumer stopped, once it has.
    finished: Option<String>,
}

impl fmt::Debug for AmqpConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConsumer")
            .field("tag", &self.consumer.tag())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl DeliverySource for AmqpConsumer {
    async fn next(&mut self) -> Result<Delivery, QueueError> {
        if let Some(reason) = &self.finished {
            return Err(QueueError::Unavailable(reason.clone()));
        }
        let reason = match self.consumer.next().await {
            Some(Ok(delivery)) => {
                return Ok(Delivery::new(
                    delivery.data,
                    delivery.redelivered,
                    Box::new(AmqpSettlement {
                        acker: delivery.acker,
                    }),
                ));
            }
            Some(Err(e)) => format!("consumer stopped: {e}"),
            None => "consumer cancelled (channel closed or queue deleted)".to_owned(),
        };
        tracing::warn!(%reason, "deploy queue: consumer finished");
        self.finished = Some(reason.clone());
        Err(QueueError::Unavailable(reason))
    }
}

#[derive(Debug)]
struct AmqpSettlement {
    acker: Acker,
}

#[async_trait]
impl Settlement for AmqpSettlement {
    async fn settle(self: Box<Self>, disposition: Disposition) -> Result<(), QueueError> {
        let sent = match disposition {
            Disposition::Ack => self.acker.ack(BasicAckOptions { multiple: false }).await,
            Disposition::Requeue => {
                self.acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await
            }
            Disposition::DeadLetter => {
                self.acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await
            }
        };
        match sent {
            Ok(true) => Ok(()),
            // lapin's answer for an acker whose channel is gone.
            Ok(false) => Err(QueueError::Unavailable(
                "the delivery's channel closed before it was settled; the broker requeues it"
                    .to_owned(),
            )),
            Err(e) => Err(QueueError::Unavailable(format!(
                "settling the delivery failed ({e}); the broker requeues it"
            ))),
        }
    }

    fn abandon(self: Box<Self>) {
        if !self.acker.usable() {
            return;
        }
        // Drop cannot wait: the nack is sent from a task. Without a runtime (process shutting
        // down) nothing is sent, and the broker requeues the job when the channel closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let options = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                if let Err(e) = self.acker.nack(options).await {
                    tracing::debug!(error = %e, "deploy queue: requeue of a dropped delivery failed");
                }
            });
        }
    }
}

/// The reason RabbitMQ recorded when it dead-lettered a message (`x-first-death-reason`).
fn dead_letter_reason(headers: Option<&FieldTable>) -> DeadLetterReason {
    let reason = headers
        .and_then(|h| h.inner().get("x-first-death-reason"))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        });
    match reason.as_deref() {
        Some("rejected") => DeadLetterReason::Rejected,
        Some("expired") => DeadLetterReason::Expired,
        Some(other) => DeadLetterReason::Other(other.to_owned()),
        None => DeadLetterReason::Other("unknown".to_owned()),
    }
}

/// A publish failure, where the broker closing the channel with 404 means the exchange is gone:
/// no route.
fn publish_error(e: lapin::Error) -> QueueError {
    if let ErrorKind::ProtocolError(amqp) = e.kind()
        && matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    {
        return QueueError::Unroutable(amqp.get_message().to_string());
    }
    e.into()
}

impl From<lapin::Error> for QueueError {
    fn from(e: lapin::Error) -> Self {
        match e.kind() {
            ErrorKind::ProtocolError(amqp) => match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => {
                    QueueError::TopologyMismatch(amqp.get_message().to_string())
                }
                // The broker is shutting down or an operator closed the connection.
                AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED) => {
                    QueueError::Unavailable(e.to_string())
                }
                _ => QueueError::Broker(e.to_string()),
            },
            // I/O, heartbeat, connection and channel state: the link is gone.
            _ => QueueError::Unavailable(e.to_string()),
        }
    }
}

/// The broker address of `amqp_url` with the topology's vhost. A URL that names a different vhost
/// is refused rather than silently overridden: one of the two settings would be ignored.
fn broker_uri(amqp_url: &str, vhost: &str) -> Result<AMQPUri, QueueError> {
    let mut uri: AMQPUri = amqp_url.parse().map_err(|e: String| {
        // The parser's message may quote the whole URL, password included.
        let detail = if e.contains(amqp_url) {
            "not a valid URL".to_owned()
        } else {
            e
        };
        QueueError::InvalidUrl(format!(
            "{detail} (expected amqp://user:password@host:port)"
        ))
    })?;
    if url_names_vhost(amqp_url) && uri.vhost != vhost {
        return Err(QueueError::InvalidUrl(format!(
            "the URL names vhost `{}` but the topology's vhost is `{vhost}`; leave the vhost out \
             of the URL",
            uri.vhost
        )));
    }
    uri.vhost = vhost.to_owned();
    Ok(uri)
}

/// True when the URL has a non-empty path (`amqp://host/vhost`), i.e. names a vhost.
fn url_names_vhost(amqp_url: &str) -> bool {
    let rest = amqp_url
        .split_once("://")
        .map_or(amqp_url, |(_, rest)| rest);
    let after_authority = rest.find(['/', '?', '#']).map_or("", |i| &rest[i..]);
    after_authority
        .strip_prefix('/')
        .is_some_and(|path| !path.is_empty() && !path.starts_with(['?', '#']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_comes_from_the_topology() {
        let uri = broker_uri("amqp://guest:guest@127.0.0.1:5672", "fctf_deploy").expect("valid");
        assert_eq!(uri.vhost, "fctf_deploy");
        assert_eq!(uri.authority.port, 5672);
        assert_eq!(uri.authority.userinfo.username, "guest");
        let uri = broker_uri("amqp://127.0.0.1:5672/", "fctf_deploy").expect("empty path");
        assert_eq!(uri.vhost, "fctf_deploy");
        let uri = broker_uri("amqp://127.0.0.1/fctf_deploy?heartbeat=10", "fctf_deploy")
            .expect("same vhost");
        assert_eq!(uri.query.heartbeat, Some(10));
        let uri = broker_uri("amqp://127.0.0.1/%2f", "/").expect("encoded default vhost");
        assert_eq!(uri.vhost, "/");
    }

    #[test]
    fn a_url_naming_another_vhost_is_refused() {
        let err = broker_uri("amqp://127.0.0.1/other", "fctf_deploy").expect_err("conflict");
        assert!(matches!(err, QueueError::InvalidUrl(m) if m.contains("`other`")));
    }

    #[test]
    fn invalid_urls_never_echo_the_password() {
        for url in [
            "amqp:s3cret-password",
            "http://u:s3cret-password@h",
            "not a url s3cret-password",
        ] {
            let err = broker_uri(url, "v").expect_err("invalid");
            assert!(matches!(err, QueueError::InvalidUrl(_)), "{url}: {err}");
            assert!(!err.to_string().contains("s3cret"), "{url}: {err}");
        }
    }

    #[test]
    fn dead_letter_reasons_are_read_from_the_broker_header() {
        let with = |reason: &str| {
            let mut headers = FieldTable::default();
            headers.insert(
                "x-first-death-reason".into(),
                AMQPValue::LongString(reason.into()),
            );
            dead_letter_reason(Some(&headers))
        };
        assert_eq!(with("rejected"), DeadLetterReason::Rejected);
        assert_eq!(with("expired"), DeadLetterReason::Expired);
        assert_eq!(with("maxlen"), DeadLetterReason::Other("maxlen".into()));
        assert_eq!(
            dead_letter_reason(None),
            DeadLetterReason::Other("unknown".into())
        );
    }
}
