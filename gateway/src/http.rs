//! The HTTP gateway: a Pingora [`ProxyHttp`] that admits each request and proxies it to its
//! instance.
//!
//! - First visit `/<path>?fctftoken=<token>`: verify, token+IP limit, then a 302 to the same
//!   path without the token, setting the gateway cookie (`Cache-Control: no-store`,
//!   `Referrer-Policy: no-referrer`).
//! - Every other request: token from the cookie, verify, liveness (an instance still starting is
//!   waited for, then 503), per-IP and token+IP limits, then proxy to the route with the gateway
//!   cookie removed and `X-Forwarded-For`/`-Proto` set.
//! - With instance hosts ([`crate::host`]), the host names the only instance a token may open:
//!   the first of the request's tokens for that instance is used, any other answers 403.
//! - Framing stricter than Pingora's ([`crate::framing`]) is checked before anything else.
//!
//! Every early answer closes the connection: a body the client sent with a refused request is
//! never read, so it can never be parsed as a second request (TEST-PLAN T06).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fctf_core::store::RateLimit;
use http::{HeaderValue, header};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};

use crate::access;
use crate::admin::Histogram;
use crate::admission::{Admission, Bucket, ClientKey, Grant, Refusal};
use crate::client::TrustedProxies;
use crate::cookie;
use crate::cut::{self, CutSwitch};
use crate::framing;
use crate::host::{HostError, InstanceHosts};
use crate::redirect;
use crate::resolve::Resolver;

/// The header that lists the client and the proxies on the way.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The same name, parsed once: looking a header up by a `&str` parses the name every time.
static X_FORWARDED_FOR_NAME: header::HeaderName = header::HeaderName::from_static(X_FORWARDED_FOR);

/// The header that tells the instance whether the client used TLS.
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// Most of our cookies tried against an instance host before the request is refused: bounds
/// the verification work a request full of cookies can cause.
const MAX_COOKIE_TOKENS: usize = 8;

/// The HTTP rate limits, in the index order of [`HttpCounters::limit_refusals`].
pub const HTTP_LIMIT_KINDS: [&str; 2] = ["ip", "token_ip"];

/// The HTTP limits, per second with a burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HttpLimits {
    /// Requests of one token from one client address.
    pub token_ip: RateLimit,
    /// Requests of one client address, all tokens together.
    pub ip: RateLimit,
}

/// Settings of the HTTP gateway.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// The rate limits.
    pub limits: HttpLimits,
    /// Largest request body, in bytes (413 beyond).
    pub body_limit: u64,
    /// Longest TCP connect to an instance.
    pub connect_timeout: Duration,
    /// True on a TLS listener: the `__Host-` cookie, Secure, `X-Forwarded-Proto: https`.
    pub tls: bool,
    /// The proxies allowed to name the client in `X-Forwarded-For`.
    pub trusted_proxies: TrustedProxies,
    /// With a wildcard host suffix, every instance has its own host and a token opens only its
    /// own (`gateway.instance_host_suffix`); `None`: one host for every instance.
    pub instance_hosts: Option<InstanceHosts>,
}

/// Counters for metrics; all monotonic.
#[derive(Debug)]
pub struct HttpCounters {
    /// Responses by status class: index 1 for 1xx up to 5 for 5xx; 0 when nothing was sent.
    pub responses_by_class: [AtomicU64; 6],
    /// Responses by status code (index = status; 0 when nothing was sent).
    pub responses_by_status: [AtomicU64; 600],
    /// Requests refused by a rate limit, indexed like [`HTTP_LIMIT_KINDS`].
    pub limit_refusals: [AtomicU64; HTTP_LIMIT_KINDS.len()],
    /// From choosing the instance to its response header.
    pub upstream_latency: Histogram,
}

impl Default for HttpCounters {
    fn default() -> Self {
        HttpCounters {
            responses_by_class: Default::default(),
            responses_by_status: std::array::from_fn(|_| AtomicU64::new(0)),
            limit_refusals: Default::default(),
            upstream_latency: Histogram::default(),
        }
    }
}

/// The HTTP gateway's proxy logic.
#[derive(Debug)]
pub struct HttpGateway {
    admission: Arc<Admission>,
    resolver: Resolver,
    settings: HttpSettings,
    counters: Arc<HttpCounters>,
    /// How often an upgraded connection (WebSocket) checks that its instance is still live.
    liveness_recheck: Duration,
}

impl HttpGateway {
    /// A gateway admitting requests with `admission`.
    pub fn new(admission: Arc<Admission>, settings: HttpSettings) -> Self {
        HttpGateway {
            admission,
            resolver: Resolver::new(),
            settings,
            counters: Arc::default(),
            liveness_recheck: crate::tcp::LIVENESS_RECHECK,
        }
    }

    /// Upgraded connections (WebSockets) check their instance every `every`, and are cut once
    /// it is stopped or replaced (the TCP sessions' [`crate::tcp::TcpSettings::liveness_recheck`];
    /// zero: never). They are cut at their token's expiry in any case.
    pub fn with_liveness_recheck(mut self, every: Duration) -> Self {
        self.liveness_recheck = every;
        self
    }

    /// Cuts the upgraded connection behind `switch` when the grant's instance stops being the
    /// live one or its token expires: a task that ends with the request (dropped with `ctx`).
    fn watch_upgraded(&self, switch: Arc<CutSwitch>, grant: Arc<Grant>) -> Watcher {
        switch.arm();
        let admission = self.admission.clone();
        let every = self.liveness_recheck;
        Watcher(tokio::spawn(async move {
            let expires_in =
                Duration::from_secs(grant.secs_left(fctf_core::clock::unix_now_secs()));
            tokio::select! {
                () = admission.until_not_live(&grant, every) => {}
                () = tokio::time::sleep(expires_in) => {}
            }
            switch.cut();
        }))
    }

    /// The counters, for metrics.
    pub fn counters(&self) -> &Arc<HttpCounters> {
        &self.counters
    }

    /// The admission checks (for metrics).
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The admission of a request: the early answer to write, or `None` to proxy.
    async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Option<EarlyAnswer> {
        let req = session.req_header();
        let raw = session
            .as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes());
        if let Err(error) = framing::check(req.version, &req.headers, raw.as_deref()) {
            return Some(EarlyAnswer::text(error.status(), &error.to_string()).because("framing"));
        }
        if let Some(length) = req.headers.get(header::CONTENT_LENGTH) {
            // Digits only (checked above); an overflow is over any limit.
            let length = std::str::from_utf8(length.as_bytes())
                .ok()
                .and_then(|l| l.parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            if length > self.settings.body_limit {
                return Some(
                    EarlyAnswer::text(413, "request body too large").because("body_too_large"),
                );
            }
        }
        let client = ctx.client;
        let now = fctf_core::clock::unix_now_secs();
        // With instance hosts, the host names the one instance this request may open.
        let host_instance = match &self.settings.instance_hosts {
            None => None,
            Some(hosts) => match request_host(req).map(|host| hosts.instance_of(host)) {
                Ok(Ok(instance)) => Some(instance),
                Ok(Err(HostError::Unknown)) => {
                    return Some(EarlyAnswer::text(404, "unknown host").because("unknown_host"));
                }
                Ok(Err(HostError::Missing)) => {
                    return Some(EarlyAnswer::text(400, "missing Host header").because("framing"));
                }
                Err(text) => return Some(EarlyAnswer::text(400, text).because("framing")),
            },
        };

        if let Some(visit) = redirect::token_visit(req.raw_path()) {
            let grant = match self.admission.verify(visit.token, now) {
                Ok(grant) => grant,
                Err(refusal) => return Some(EarlyAnswer::refusal(refusal)),
            };
            ctx.grant = Some(grant.clone());
            if host_instance.is_some_and(|want| want != grant.claims.instance) {
                // No cookie for a host the token does not open.
                return Some(self.refuse(Refusal::WrongInstance));
            }
            // The same liveness rule as a cookie: a stopped or replaced instance's link sets
            // no cookie (a player would otherwise follow a redirect to a 403), and a starting
            // one is waited for as a request would be.
            if let Err(refusal) = self.admission.await_live(&grant).await {
                return Some(EarlyAnswer::refusal(refusal));
            }
            if let Err(refusal) = self.limit_token_ip(&grant, client).await {
                return Some(EarlyAnswer::refusal(refusal));
            }
            let tls = self.settings.tls || crate::tls::is_tls(session);
            let set_cookie = cookie::set_cookie(visit.token, grant.secs_left(now), tls);
            return Some(EarlyAnswer::redirect(visit.location, set_cookie));
        }

        let cookies = req
            .headers
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.as_bytes());
        let verified = match host_instance {
            None => match cookie::token_from_cookies(cookies) {
                Some(token) => self.admission.verify(token, now),
                None => Err(Refusal::MissingToken),
            },
            Some(want) => self.cookie_for_instance(cookies, want, now),
        };
        let grant = match verified {
            Ok(grant) => grant,
            Err(refusal @ (Refusal::MissingToken | Refusal::WrongInstance)) => {
                return Some(self.refuse(refusal));
            }
            Err(refusal) => return Some(EarlyAnswer::refusal(refusal)),
        };
        // Known from here on, for the access log (the upstream only once it is chosen).
        ctx.grant = Some(grant.clone());
        if let Err(refusal) = self.admission.await_live(&grant).await {
            return Some(EarlyAnswer::refusal(refusal));
        }
        let ip_bucket = Bucket::HttpIp(ClientKey::from(client));
        if let Err(refusal) = self
            .admission
            .limit_bucket(&ip_bucket, self.settings.limits.ip)
            .await
        {
            self.count_limit(0, &refusal);
            return Some(EarlyAnswer::refusal(refusal));
        }
        if let Err(refusal) = self.limit_token_ip(&grant, client).await {
            return Some(EarlyAnswer::refusal(refusal));
        }
        match self.resolver.resolve(&grant.upstream).await {
            Some(addr) => ctx.upstream = Some(addr),
            None => {
                return Some(
                    EarlyAnswer::text(502, "challenge instance unreachable").because("unresolved"),
                );
            }
        }
        None
    }

    async fn limit_token_ip(&self, grant: &Grant, client: IpAddr) -> Result<(), Refusal> {
        let bucket = Bucket::HttpTokenIp(grant.digest.clone(), ClientKey::from(client));
        let limited = self
            .admission
            .limit_bucket(&bucket, self.settings.limits.token_ip)
            .await;
        if let Err(refusal) = &limited {
            self.count_limit(1, refusal);
        }
        limited
    }

    /// Counts a rate-limit refusal of the limit `HTTP_LIMIT_KINDS[kind]`.
    fn count_limit(&self, kind: usize, refusal: &Refusal) {
        if matches!(refusal, Refusal::Limited { .. }) {
            self.counters.limit_refusals[kind].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The answer to a refusal this module decides (the admission checks count their own).
    fn refuse(&self, refusal: Refusal) -> EarlyAnswer {
        self.admission.count_refusal(&refusal);
        EarlyAnswer::refusal(refusal)
    }

    /// The grant of the first of our cookies whose token opens `want` (an instance host's
    /// instance), trying at most [`MAX_COOKIE_TOKENS`]; otherwise the first refusal met
    /// ([`Refusal::WrongInstance`] for a valid token of another instance).
    fn cookie_for_instance<'a>(
        &self,
        cookies: impl IntoIterator<Item = &'a [u8]>,
        want: fctf_core::ids::InstanceId,
        now: u64,
    ) -> Result<Arc<Grant>, Refusal> {
        let mut refused = None;
        for token in cookie::tokens_from_cookies(cookies).take(MAX_COOKIE_TOKENS) {
            match self.admission.verify(token, now) {
                Ok(grant) if grant.claims.instance == want => return Ok(grant),
                Ok(_) => refused = refused.or(Some(Refusal::WrongInstance)),
                Err(refusal) => refused = refused.or(Some(refusal)),
            }
        }
        Err(refused.unwrap_or(Refusal::MissingToken))
    }
}

/// The `Cookie` header values to send upstream when the gateway's cookie has to be removed from
/// `headers` (`None`: nothing to remove, the headers stay as they are). Values without ours are
/// kept as they are (no copy); an emptied one is dropped.
fn stripped_cookies(headers: &http::HeaderMap) -> Option<Vec<HeaderValue>> {
    let mut kept: Option<Vec<HeaderValue>> = None;
    for (i, value) in headers.get_all(header::COOKIE).iter().enumerate() {
        match cookie::strip_ours(value.as_bytes()) {
            Some(Cow::Borrowed(_)) => {
                if let Some(kept) = &mut kept {
                    kept.push(value.clone());
                }
            }
            stripped => {
                let kept = kept.get_or_insert_with(|| {
                    headers
                        .get_all(header::COOKIE)
                        .iter()
                        .take(i)
                        .cloned()
                        .collect()
                });
                if let Some(Cow::Owned(bytes)) = stripped {
                    // Made of a valid value's bytes, so always valid.
                    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(bytes)) {
                        kept.push(value);
                    }
                }
            }
        }
    }
    kept
}

/// The host a request names: its `Host` header, or the authority of an absolute-form target
/// when there is no `Host`. Both present and different is ambiguous (TEST-PLAN T10): refused.
fn request_host(req: &RequestHeader) -> Result<&[u8], &'static str> {
    let header = req.headers.get(header::HOST).map(|v| v.as_bytes());
    let authority = req.uri.authority().map(|a| a.as_str().as_bytes());
    match (header, authority) {
        (Some(host), Some(authority)) if !host.eq_ignore_ascii_case(authority) => {
            Err("Host and request target name different hosts")
        }
        (Some(host), _) | (None, Some(host)) => Ok(host),
        (None, None) => Ok(b""),
    }
}

/// Per-request state.
#[derive(Debug)]
pub struct RequestCtx {
    /// The TCP peer.
    peer: IpAddr,
    /// The client: the peer, or the address a trusted proxy names ([`TrustedProxies::client`]).
    client: IpAddr,
    grant: Option<Arc<Grant>>,
    upstream: Option<SocketAddr>,
    body_bytes: u64,
    /// When the request's header was read.
    started: Instant,
    /// Why the gateway answered itself, for the access log.
    reason: Option<&'static str>,
    /// When the instance was chosen, until its response header arrives (upstream latency).
    upstream_started: Option<Instant>,
    /// The connection's cut switch, on an upgrade request (its watcher may cut it).
    cut: Option<Arc<CutSwitch>>,
    /// Cuts an upgraded connection when its instance stops; ends with the request.
    watcher: Option<Watcher>,
}

/// A task watching an upgraded connection's instance; aborted when dropped.
#[derive(Debug)]
struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response the gateway writes itself, instead of proxying.
#[derive(Debug)]
struct EarlyAnswer {
    /// Why, for the access log (a metrics kind).
    reason: &'static str,
    status: u16,
    headers: Vec<(header::HeaderName, String)>,
    body: Bytes,
}

impl EarlyAnswer {
    fn text(status: u16, text: &str) -> Self {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        EarlyAnswer {
            reason: "error",
            status,
            headers: vec![(header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned())],
            body: Bytes::from(format!("{status} {reason}: {text}\n")),
        }
    }

    /// The same answer, logged with `reason`.
    fn because(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }

    fn refusal(refusal: Refusal) -> Self {
        let mut answer = Self::text(refusal.status(), &refusal.to_string()).because(refusal.kind());
        if let Some(secs) = refusal.retry_after_secs() {
            answer.headers.push((header::RETRY_AFTER, secs.to_string()));
        }
        answer
    }

    fn redirect(location: String, set_cookie: String) -> Self {
        EarlyAnswer {
            reason: "token_visit",
            status: 302,
            headers: vec![
                (header::LOCATION, location),
                (header::SET_COOKIE, set_cookie),
                (header::REFERRER_POLICY, "no-referrer".to_owned()),
            ],
            body: Bytes::new(),
        }
    }

    /// Writes the answer and closes the connection afterwards.
    async fn write(self, session: &mut Session) -> pingora::Result<()> {
        let mut resp = ResponseHeader::build(self.status, Some(self.headers.len() + 3))?;
        for (name, value) in self.headers {
            resp.append_header(name, value)?;
        }
        resp.insert_header(header::CACHE_CONTROL, "no-store")?;
        resp.set_content_length(self.body.len())?;
        // Keep-alive off and the body unread: whatever the client sent after this request's
        // header is never parsed.
        session
            .as_downstream_mut()
            .write_error_response(resp, self.body)
            .await
    }
}

#[async_trait]
impl ProxyHttp for HttpGateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            peer: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            grant: None,
            upstream: None,
            body_bytes: 0,
            started: Instant::now(),
            reason: None,
            upstream_started: None,
            cut: None,
            watcher: None,
        }
    }

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {
        // No modules: the default adds a disabled compression module that still costs a
        // context allocation and filter calls per request.
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            ctx.peer = addr.ip();
            let forwarded_for = session
                .req_header()
                .headers
                .get_all(&X_FORWARDED_FOR_NAME)
                .iter()
                .map(|v| v.as_bytes());
            ctx.client = self
                .settings
                .trusted_proxies
                .client(ctx.peer, forwarded_for);
        }
        match self.admit(session, ctx).await {
            Some(answer) => {
                ctx.reason = Some(answer.reason);
                answer.write(session).await?;
                Ok(true)
            }
            None => {
                if session.is_upgrade_req() {
                    // A WebSocket may stay idle far longer than a request.
                    session.set_read_timeout(None);
                    // But it must end when its instance stops, idle or not.
                    let switch = cut::switch_of(session.as_downstream());
                    if let (Some(switch), Some(grant)) = (switch, ctx.grant.clone()) {
                        ctx.watcher = Some(self.watch_upgraded(switch.clone(), grant));
                        ctx.cut = Some(switch);
                    }
                }
                Ok(false)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > self.settings.body_limit {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body too large",
                ));
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let (Some(addr), Some(grant)) = (ctx.upstream, ctx.grant.as_ref()) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "request was not admitted",
            ));
        };
        ctx.upstream_started = Some(Instant::now());
        let mut peer = HttpPeer::new(addr, false, String::new());
        // Pooled connections are per instance: a replaced instance never gets the old ones.
        peer.group_key = grant.pool_key;
        peer.options.connection_timeout = Some(self.settings.connect_timeout);
        peer.options.total_connection_timeout = Some(self.settings.connect_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        peer.options.read_timeout = if session.is_upgrade_req() {
            None
        } else {
            Some(Duration::from_secs(60))
        };
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(kept) = stripped_cookies(&upstream.headers) {
            upstream.remove_header(&header::COOKIE);
            for value in kept {
                upstream.append_header(header::COOKIE, value)?;
            }
        }
        // Appended to only behind a trusted proxy: a client cannot choose the address the
        // challenge sees.
        let forwarded_for = self.settings.trusted_proxies.forwarded_for(
            ctx.peer,
            upstream
                .headers
                .get_all(&X_FORWARDED_FOR_NAME)
                .iter()
                .map(|v| v.as_bytes()),
        );
        upstream.insert_header(X_FORWARDED_FOR, forwarded_for)?;
        upstream.insert_header(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if self.settings.tls || crate::tls::is_tls(session) {
                "https"
            } else {
                "http"
            }),
        )?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(started) = ctx.upstream_started.take() {
            self.counters.upstream_latency.observe(started.elapsed());
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let class = usize::from(status / 100).min(5);
        self.counters.responses_by_class[class].fetch_add(1, Ordering::Relaxed);
        if let Some(by_status) = self.counters.responses_by_status.get(usize::from(status)) {
            by_status.fetch_add(1, Ordering::Relaxed);
        }
        let req = session.req_header();
        let grant = ctx.grant.as_deref();
        tracing::info!(
            target: access::TARGET,
            proto = "http",
            client = %ctx.client,
            method = %req.method,
            // Never the query: a first visit carries the token there.
            path = req.uri.path(),
            status,
            reason = if ctx.cut.as_ref().is_some_and(|c| c.is_cut()) {
                // Cut by its watcher: the token ran out, or else the instance stopped.
                Some(match grant.map(|g| g.secs_left(fctf_core::clock::unix_now_secs())) {
                    Some(0) => "token_expired",
                    _ => "instance_stopped",
                })
            } else {
                ctx.reason.or(error.map(|e| e.etype().as_str()))
            },
            team = grant.map(|g| g.claims.team.0),
            challenge = grant.map(|g| g.claims.challenge.0),
            instance = grant.map(|g| tracing::field::display(g.claims.instance)),
            upstream = ctx.upstream.map(tracing::field::display),
            duration_us = access::micros_since(ctx.started),
            "access"
        );
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    // The client is gone: nothing to answer.
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 {
            let text = match code {
                502 => "challenge instance unreachable",
                413 => "request body too large",
                _ => "request failed",
            };
            if let Err(error) = EarlyAnswer::text(code, text).write(session).await {
                tracing::debug!(%error, "could not write the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(values: &[&'static str]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for value in values {
            map.append(header::COOKIE, HeaderValue::from_static(value));
        }
        map
    }

    fn stripped(values: &[&'static str]) -> Option<Vec<String>> {
        stripped_cookies(&cookies(values)).map(|kept| {
            kept.iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        })
    }

    #[test]
    fn only_our_cookie_is_removed_and_headers_without_it_stay() {
        assert_eq!(stripped(&[]), None);
        assert_eq!(stripped(&["a=1; b=2"]), None);
        assert_eq!(stripped(&["FCTF_Auth_Token=t"]), Some(vec![]));
        assert_eq!(
            stripped(&["a=1; FCTF_Auth_Token=t; b=2"]),
            Some(vec!["a=1; b=2".to_owned()])
        );
        assert_eq!(
            stripped(&["a=1", "FCTF_Auth_Token=t", "b=2"]),
            Some(vec!["a=1".to_owned(), "b=2".to_owned()])
        );
        // A blank header is dropped, as an emptied one is.
        assert_eq!(stripped(&["a=1", " "]), Some(vec!["a=1".to_owned()]));
    }
}
