//! One scripted team of the chaos run, with ordinary clients (HTTP/1.1 with a cookie jar, a plain
//! TCP socket), that keeps going through faults: a retryable answer (429, 503) or a refused
//! connection is retried until a deadline; every answer is tallied so the run can compare what
//! players were told with what the database holds.

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The error kinds of `control/src/error.rs`, the only ones an API answer may carry.
pub const KINDS: &[&str] = &[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "payload_too_large",
    "unprocessable",
    "quota_exceeded",
    "queue_full",
    "rate_limited",
    "unavailable",
    "internal",
];

/// The statuses the gateway documents (docs/gateway.md) for what it answers itself, plus what
/// the demo instance answers (200).
pub const GATEWAY_STATUSES: &[u16] = &[200, 302, 400, 401, 403, 429, 502, 503];

/// Where the players go.
#[derive(Clone, Debug)]
pub struct Ports {
    pub api: u16,
    pub http: u16,
    pub tcp: u16,
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    set_cookies: Vec<String>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1.1 client, one connection per request, with a cookie jar.
#[derive(Clone, Debug, Default)]
pub struct Client {
    cookies: BTreeMap<String, String>,
    authorization: Option<String>,
}

impl Client {
    pub fn token(token: &str) -> Client {
        Client {
            authorization: Some(format!("Token {token}")),
            ..Client::default()
        }
    }

    pub fn send(
        &mut self,
        port: u16,
        method: &str,
        target: &str,
        body: Option<&Value>,
    ) -> io::Result<Answer> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(90)))?;
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        );
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            head.push_str(&format!("Cookie: {}\r\n", jar.join("; ")));
        }
        if let Some(auth) = &self.authorization {
            head.push_str(&format!("Authorization: {auth}\r\n"));
        }
        let payload = body.map(Value::to_string).unwrap_or_default();
        if body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
        stream.write_all(head.as_bytes())?;
        stream.write_all(payload.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let answer = parse(&raw).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("no complete answer: {:?}", String::from_utf8_lossy(&raw)),
            )
        })?;
        for value in &answer.set_cookies {
            let pair = value.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                if value.contains("Max-Age=0") || v.is_empty() {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies
                        .insert(k.trim().to_owned(), v.trim().to_owned());
                }
            }
        }
        Ok(answer)
    }
}

fn parse(raw: &[u8]) -> Option<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut set_cookies = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("set-cookie") {
            set_cookies.push(value.to_owned());
        }
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body);
    }
    Some(Answer {
        status,
        body,
        set_cookies,
    })
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        let start = line_end + 2;
        if size == 0 || body.len() < start + size {
            break;
        }
        out.extend_from_slice(&body[start..start + size]);
        body = body.get(start + size + 2..).unwrap_or_default();
    }
    out
}

/// What every team saw, merged.
#[derive(Debug, Default)]
pub struct Tally {
    /// API error answers by (status, kind).
    pub api_errors: BTreeMap<(u16, String), u32>,
    /// API answers that broke the error contract (no documented kind), or transport failures of
    /// the Contestant Service (which is never killed).
    pub violations: Vec<String>,
    /// Gateway answers by status (HTTP), and TCP refusals by reason.
    pub gateway: BTreeMap<u16, u32>,
    pub tcp_refusals: BTreeMap<String, u32>,
    /// Per (team, challenge): how many "correct" and "already_solved" answers.
    pub correct: BTreeMap<(i64, i64), u32>,
    pub already: BTreeMap<(i64, i64), u32>,
    /// Wrong flags: answered "incorrect", and sent (whatever the answer).
    pub wrong_acked: u32,
    pub wrong_sent: u32,
    /// Awards: answered 200, and sent.
    pub awards_acked: u32,
    pub awards_sent: u32,
    /// Instance starts accepted, and instances seen Running.
    pub starts: u32,
    pub running: u32,
    /// Stops accepted.
    pub stops: u32,
    /// Flags read through the gateway over HTTP and over TCP.
    pub http_flags: u32,
    pub tcp_flags: u32,
    /// Starts that took more than 30 s to be Running (see docs/operations.md: a start whose
    /// reservation the store applied after answering a timeout waits for its provisional TTL).
    pub slow_starts: Vec<String>,
    /// Things the script gave up on (deadlines).
    pub gave_up: Vec<String>,
    /// The teams: name -> id.
    pub teams: BTreeMap<String, i64>,
}

/// A team's script.
pub struct Team {
    pub name: String,
    pub ports: Ports,
    pub admin_token: String,
    pub tally: Arc<Mutex<Tally>>,
    /// Rounds end when this is reached (a round in progress finishes).
    pub until: Instant,
    client: Client,
    team_id: i64,
    challenges: BTreeMap<String, i64>,
}

/// How long one step may keep retrying through faults.
const STEP_LIMIT: Duration = Duration::from_secs(120);

const PASSWORD: &str = "chaos-password-1";
const WARMUP_FLAG: &str = "FCTF{welcome_to_fctf}";

impl Team {
    pub fn new(name: String, ports: Ports, admin_token: String, tally: Arc<Mutex<Tally>>) -> Team {
        Team {
            name,
            ports,
            admin_token,
            tally,
            until: Instant::now(),
            client: Client::default(),
            team_id: 0,
            challenges: BTreeMap::new(),
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One API call by `client`, every error answer checked against the contract; `None` when
    /// the connection failed (also a violation: the Contestant Service is never killed).
    fn call(
        &self,
        client: &mut Client,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Option<Answer> {
        match client.send(
            self.ports.api,
            method,
            &format!("/api/v1{path}"),
            body.as_ref(),
        ) {
            Ok(answer) => {
                if answer.status >= 400 {
                    let json = answer.json();
                    let kind = json["error"].as_str().unwrap_or("").to_owned();
                    let mut tally = self.tally();
                    if json["success"] != false || !KINDS.contains(&kind.as_str()) {
                        tally.violations.push(format!(
                            "{method} {path}: {} {}",
                            answer.status,
                            answer.text()
                        ));
                    }
                    *tally.api_errors.entry((answer.status, kind)).or_default() += 1;
                }
                Some(answer)
            }
            Err(e) => {
                self.tally()
                    .violations
                    .push(format!("{method} {path}: transport: {e}"));
                std::thread::sleep(Duration::from_millis(200));
                None
            }
        }
    }

    /// Retries `call` while the answer is retryable (429 rate/queue, 503, 500, transport).
    fn call_until(
        &self,
        client: &mut Client,
        method: &str,
        path: &str,
        body: Option<Value>,
        sent: impl Fn(&mut Tally),
    ) -> Option<Answer> {
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            sent(&mut self.tally());
            if let Some(answer) = self.call(client, method, path, body.clone()) {
                let kind = answer.json()["error"].as_str().unwrap_or("").to_owned();
                let retry = matches!(answer.status, 500 | 503)
                    || (answer.status == 429 && kind != "quota_exceeded");
                if !retry {
                    return Some(answer);
                }
            }
            if Instant::now() >= deadline {
                self.tally()
                    .gave_up
                    .push(format!("{}: {method} {path}", self.name));
                return None;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The whole script: join, then rounds until `until`.
    pub fn play(mut self, until: Instant) {
        self.until = until;
        if !self.join() {
            return;
        }
        let mut client = self.client.clone();
        let Some(list) = self.call_until(&mut client, "GET", "/challenges", None, |_| {}) else {
            return;
        };
        for c in list.json()["data"].as_array().into_iter().flatten() {
            if let (Some(name), Some(id)) = (c["name"].as_str(), c["id"].as_i64()) {
                self.challenges.insert(name.to_owned(), id);
            }
        }
        let (warmup, web, shell) = (
            self.challenges["Warm-up"],
            self.challenges["Demo web"],
            self.challenges["Demo shell"],
        );
        self.award();
        // Wrong flags first (one each: under the wrong-flag limit), then concurrent duplicates.
        for challenge in [warmup, web, shell] {
            self.submit_wrong(challenge);
        }
        self.submit_concurrently(warmup, WARMUP_FLAG, 3);
        // Rounds: instances started, read through the gateway and stopped (a solved challenge
        // cannot be started again, so nothing is submitted yet).
        loop {
            self.instance_round(web, false, false);
            self.instance_round(shell, true, false);
            if Instant::now() >= self.until {
                break;
            }
        }
        // The finale: the web flag submitted twice at once (the correct one stops the
        // instance), the TCP instance read once more and left Running for the check.
        self.instance_round(web, false, true);
        if let Some(status) = self.running_instance(shell) {
            let _ = self.tcp_flag(status["access"]["token"].as_str().unwrap_or(""));
        }
    }

    /// Register and create the team; both retried through faults, and an earlier attempt that
    /// was done though its answer was an error is recognised (name taken: log in instead).
    fn join(&mut self) -> bool {
        let mut client = Client::default();
        let body = json!({"name": self.name, "password": PASSWORD, "email": format!("{}@example.org", self.name)});
        let Some(answer) =
            self.call_until(&mut client, "POST", "/auth/register", Some(body), |_| {})
        else {
            return false;
        };
        if answer.status != 200 {
            let login = json!({"name": self.name, "password": PASSWORD});
            match self.call_until(&mut client, "POST", "/auth/login", Some(login), |_| {}) {
                Some(a) if a.status == 200 => {}
                other => {
                    self.tally().gave_up.push(format!(
                        "{}: register {} then login {:?}",
                        self.name,
                        answer.text(),
                        other.map(|a| a.text())
                    ));
                    return false;
                }
            }
        }
        let team = format!("team-{}", self.name);
        let _ = self.call_until(
            &mut client,
            "POST",
            "/teams",
            Some(json!({"name": team})),
            |_| {},
        );
        let Some(me) = self.call_until(&mut client, "GET", "/teams/me", None, |_| {}) else {
            return false;
        };
        let Some(id) = me.json()["data"]["id"].as_i64() else {
            self.tally()
                .gave_up
                .push(format!("{}: no team: {}", self.name, me.text()));
            return false;
        };
        self.team_id = id;
        self.client = client;
        self.tally().teams.insert(team, id);
        true
    }

    /// One award for the team, by the admin.
    fn award(&self) {
        let mut admin = Client::token(&self.admin_token);
        let body = json!({"team_id": self.team_id, "name": "survivor", "value": 7});
        if let Some(answer) = self.call_until(&mut admin, "POST", "/awards", Some(body), |t| {
            t.awards_sent += 1;
        }) && answer.status == 200
        {
            self.tally().awards_acked += 1;
        }
    }

    fn submit_wrong(&self, challenge: i64) {
        let mut client = self.client.clone();
        let body = json!({"challenge_id": challenge, "submission": "FCTF{wrong}"});
        if let Some(answer) = self.call_until(
            &mut client,
            "POST",
            "/challenges/attempt",
            Some(body),
            |t| {
                t.wrong_sent += 1;
            },
        ) && answer.json()["data"]["status"] == "incorrect"
        {
            self.tally().wrong_acked += 1;
        }
    }

    /// `copies` submissions of one flag at once, from clones of the session.
    fn submit_concurrently(&self, challenge: i64, flag: &str, copies: usize) {
        std::thread::scope(|scope| {
            for _ in 0..copies {
                scope.spawn(|| self.submit(challenge, flag));
            }
        });
    }

    fn submit(&self, challenge: i64, flag: &str) {
        let mut client = self.client.clone();
        let body = json!({"challenge_id": challenge, "submission": flag});
        let Some(answer) = self.call_until(
            &mut client,
            "POST",
            "/challenges/attempt",
            Some(body),
            |_| {},
        ) else {
            return;
        };
        let status = answer.json()["data"]["status"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let mut tally = self.tally();
        let key = (self.team_id, challenge);
        match status.as_str() {
            "correct" => *tally.correct.entry(key).or_default() += 1,
            "already_solved" => *tally.already.entry(key).or_default() += 1,
            _ => tally.violations.push(format!(
                "{}: the right flag answered {} {}",
                self.name,
                answer.status,
                answer.text()
            )),
        }
    }

    /// Start an instance, wait for Running, read its flag through the gateway; then either
    /// submit it twice at once (a correct submission stops the instance) or stop it.
    fn instance_round(&self, challenge: i64, tcp: bool, submit: bool) {
        let Some(status) = self.running_instance(challenge) else {
            return;
        };
        let token = status["access"]["token"].as_str().unwrap_or("").to_owned();
        let flag = if tcp {
            self.tcp_flag(&token)
        } else {
            self.http_flag(&token)
        };
        match flag {
            Some(flag) if submit => self.submit_concurrently(challenge, &flag, 2),
            _ => self.stop(challenge),
        }
    }

    /// Starts (or finds) the team's instance of `challenge` and waits until it is Running.
    fn running_instance(&self, challenge: i64) -> Option<Value> {
        let mut client = self.client.clone();
        let path = format!("/challenges/{challenge}/instance");
        let began = Instant::now();
        let deadline = began + STEP_LIMIT;
        let mut need_start = true;
        loop {
            if need_start {
                let answer = self.call_until(&mut client, "POST", &path, None, |_| {})?;
                let message = answer.json()["message"].as_str().unwrap_or("").to_owned();
                match answer.status {
                    200 => {
                        self.tally().starts += 1;
                        need_start = false;
                    }
                    // "changed while starting it; please try again"
                    409 if !message.contains("solved") => {}
                    _ => {
                        self.tally().gave_up.push(format!(
                            "{}: start answered {} {}",
                            self.name,
                            answer.status,
                            answer.text()
                        ));
                        return None;
                    }
                }
            }
            let answer = self.call_until(&mut client, "GET", &path, None, |_| {})?;
            let data = answer.json()["data"].clone();
            match data["state"].as_str() {
                Some("running") => {
                    let took = began.elapsed();
                    let mut tally = self.tally();
                    tally.running += 1;
                    if took > Duration::from_secs(30) {
                        tally.slow_starts.push(format!(
                            "{}: challenge {challenge} Running after {took:?}",
                            self.name
                        ));
                    }
                    drop(tally);
                    return Some(data);
                }
                Some("failed" | "stopped") | None => need_start = true,
                _ => {}
            }
            if data["instance"].is_null() {
                need_start = true;
            }
            if Instant::now() >= deadline {
                self.tally().gave_up.push(format!(
                    "{}: instance of {challenge} not Running after {STEP_LIMIT:?}: {data}",
                    self.name
                ));
                return None;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn stop(&self, challenge: i64) {
        let mut client = self.client.clone();
        let path = format!("/challenges/{challenge}/instance");
        if let Some(answer) = self.call_until(&mut client, "DELETE", &path, None, |_| {})
            && answer.status == 200
        {
            self.tally().stops += 1;
        }
    }

    fn gateway_status(&self, status: u16) {
        *self.tally().gateway.entry(status).or_default() += 1;
    }

    /// Token URL -> cookie -> robots.txt -> the hidden page, retried through faults.
    fn http_flag(&self, token: &str) -> Option<String> {
        let deadline = Instant::now() + STEP_LIMIT;
        let port = self.ports.http;
        loop {
            let mut browser = Client::default();
            let found = (|| {
                let first = browser
                    .send(port, "GET", &format!("/?fctftoken={token}"), None)
                    .ok()?;
                self.gateway_status(first.status);
                if first.status != 302 {
                    return None;
                }
                let robots = browser.send(port, "GET", "/robots.txt", None).ok()?;
                self.gateway_status(robots.status);
                let hidden = robots
                    .text()
                    .lines()
                    .find_map(|l| l.strip_prefix("Disallow: ").map(|s| s.trim().to_owned()))?;
                let page = browser.send(port, "GET", &hidden, None).ok()?;
                self.gateway_status(page.status);
                let flag = page.text().trim().to_owned();
                flag.starts_with("FCTF{").then_some(flag)
            })();
            if let Some(flag) = found {
                self.tally().http_flags += 1;
                return Some(flag);
            }
            if Instant::now() >= deadline {
                self.tally()
                    .gave_up
                    .push(format!("{}: no HTTP flag through the gateway", self.name));
                return None;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Token line and commands in one write, as pwntools sends them.
    fn tcp_flag(&self, token: &str) -> Option<String> {
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            let text = (|| {
                let mut stream = TcpStream::connect(("127.0.0.1", self.ports.tcp)).ok()?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(15)))
                    .ok()?;
                stream
                    .write_all(format!("{token}\nflag\nquit\n").as_bytes())
                    .ok()?;
                let mut text = String::new();
                let _ = stream.read_to_string(&mut text);
                Some(text)
            })()
            .unwrap_or_default();
            let flag = text
                .split(|c: char| c.is_whitespace() || c == '>')
                .find(|w| w.starts_with("FCTF{"))
                .map(str::to_owned);
            if text.contains("access granted")
                && let Some(flag) = flag
            {
                self.tally().tcp_flags += 1;
                return Some(flag);
            }
            let reason = text
                .lines()
                .find_map(|l| l.split("access denied: ").nth(1))
                .map_or_else(|| "closed".to_owned(), str::to_owned);
            *self.tally().tcp_refusals.entry(reason).or_default() += 1;
            if Instant::now() >= deadline {
                self.tally()
                    .gave_up
                    .push(format!("{}: no TCP flag through the gateway", self.name));
                return None;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
