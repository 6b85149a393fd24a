//! The whole player journey against a real `fctf up` subprocess on free ports, with ordinary
//! clients (an HTTP/1.1 client that keeps cookies, a plain TCP socket): register, create a team,
//! list challenges, submit the static flag; start the HTTP instance, open the token URL, follow
//! the redirect, find the flag through the gateway, submit it; start the TCP instance, send the
//! token line and a command in one write, get the flag, submit it; the scoreboard orders both
//! teams; a second team cannot see or stop the first team's instance; a stopped instance's token
//! opens nothing; an admin token lists and force-stops instances; Ctrl-C stops every instance.
//!
//! Run on the embedded default and on Redis + RabbitMQ + MariaDB (`fctf up -c`).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{SECRET, Scratch, fctf};

/// A `fctf up` child, interrupted (SIGINT) and reaped when dropped.
pub(super) struct Platform {
    pub(super) child: Child,
    pub(super) api: u16,
    pub(super) api_admin: u16,
    pub(super) http: u16,
    pub(super) tcp: u16,
    pub(super) admin_token: String,
    pub(super) banner: String,
}

impl Drop for Platform {
    /// SIGINT first, so `fctf up` stops its instance programs even when a test fails; then
    /// SIGKILL if it has not exited within 30 s.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Platform {
    /// Ctrl-C: must exit 0 after stopping its instances.
    fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "fctf up did not stop within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `fctf up` (with `config` as its file when given) on free ports under `scratch`, and
/// waits for its banner.
pub(super) fn start(scratch: &Scratch, config: Option<&std::path::Path>) -> Platform {
    start_with(scratch, config, &[])
}

/// [`start`] with extra `FCTF_*` overrides.
pub(super) fn start_with(
    scratch: &Scratch,
    config: Option<&std::path::Path>,
    overrides: &[(&str, &str)],
) -> Platform {
    let (api, api_admin, http, tcp, gw_admin, center) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let data = scratch.dir.join("data");
    let mut command = fctf();
    command.arg("up");
    if let Some(config) = config {
        command.arg("-c").arg(config);
    } else {
        command.env(
            "FCTF_DATABASE__URL",
            format!("sqlite://{}/fctf.db", data.display()),
        );
    }
    command
        .env("FCTF_RUNTIME__LOCAL_STATE_DIR", data.join("instances"))
        .env("FCTF_CONTESTANT__FILES_DIR", data.join("files"))
        .env("FCTF_CONTESTANT__LISTEN", format!("127.0.0.1:{api}"))
        .env(
            "FCTF_CONTESTANT__ADMIN_LISTEN",
            format!("127.0.0.1:{api_admin}"),
        )
        .env("FCTF_GATEWAY__HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("FCTF_GATEWAY__TCP_LISTEN", format!("127.0.0.1:{tcp}"))
        .env(
            "FCTF_GATEWAY__ADMIN_LISTEN",
            format!("127.0.0.1:{gw_admin}"),
        )
        .env("FCTF_DEPLOYMENT__LISTEN", format!("127.0.0.1:{center}"))
        .env(
            "FCTF_DEPLOYMENT__PUBLIC_HTTP_URL",
            format!("http://127.0.0.1:{http}"),
        )
        .env("FCTF_DEPLOYMENT__PUBLIC_TCP_PORT", tcp.to_string())
        .envs(overrides.iter().copied())
        .current_dir(&scratch.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                banner.push_str(&line);
                banner.push('\n');
                if line.starts_with("Stop with Ctrl-C") {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("fctf up printed no banner within 60 s; got:\n{banner}");
            }
        }
    }
    let admin_token = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("Admin API token"))
        .unwrap()
        .trim()
        .to_owned();
    Platform {
        child,
        api,
        api_admin,
        http,
        tcp,
        admin_token,
        banner,
    }
}

/// A minimal HTTP/1.1 client with a cookie jar, one connection per request (`Connection:
/// close`), as `curl -b jar -c jar` is used in the README.
#[derive(Default)]
pub(super) struct Client {
    pub(super) cookies: BTreeMap<String, String>,
    pub(super) authorization: Option<String>,
}

pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Answer {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    pub(super) fn token(token: &str) -> Self {
        Self {
            authorization: Some(format!("Token {token}")),
            ..Self::default()
        }
    }

    pub(super) fn send(
        &mut self,
        method: &str,
        port: u16,
        target: &str,
        body: Option<&Value>,
    ) -> Answer {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
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
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        if body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(payload.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        for (name, value) in &headers {
            if name.eq_ignore_ascii_case("set-cookie") {
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
        }
        let mut body = raw[split + 4..].to_vec();
        if headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        }) {
            body = dechunk(&body);
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    pub(super) fn api(
        &mut self,
        platform: &Platform,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        self.send(
            method,
            platform.api,
            &format!("/api/v1{path}"),
            body.as_ref(),
        )
    }
}

pub(super) fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
}

/// The id of the challenge named `name` in the player's list.
pub(super) fn challenge_id(client: &mut Client, platform: &Platform, name: &str) -> i64 {
    let list = client.api(platform, "GET", "/challenges", None);
    assert_eq!(list.status, 200, "{}", list.text());
    list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no challenge {name:?} in {}", list.text()))["id"]
        .as_i64()
        .unwrap()
}

pub(super) fn register_team(platform: &Platform, user: &str, team: &str) -> Client {
    let mut client = Client::default();
    let answer = client.api(
        platform,
        "POST",
        "/auth/register",
        Some(json!({"name": user, "password": "journey-password-1", "email": format!("{user}@example.org")})),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        !client.cookies.is_empty(),
        "registration logs in with a session cookie"
    );
    let answer = client.api(platform, "POST", "/teams", Some(json!({"name": team})));
    assert_eq!(answer.status, 200, "{}", answer.text());
    client
}

pub(super) fn submit(
    client: &mut Client,
    platform: &Platform,
    challenge: i64,
    flag: &str,
) -> String {
    let answer = client.api(
        platform,
        "POST",
        "/challenges/attempt",
        Some(json!({"challenge_id": challenge, "submission": flag})),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["data"]["status"].as_str().unwrap().to_owned()
}

/// Starts the team's instance of `challenge` and polls its status until Running.
pub(super) fn start_instance(client: &mut Client, platform: &Platform, challenge: i64) -> Value {
    let answer = client.api(
        platform,
        "POST",
        &format!("/challenges/{challenge}/instance"),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = client.api(
            platform,
            "GET",
            &format!("/challenges/{challenge}/instance"),
            None,
        );
        assert_eq!(status.status, 200, "{}", status.text());
        let data = status.json()["data"].clone();
        if data["state"] == "running" {
            return data;
        }
        assert_ne!(data["state"], "failed", "{data}");
        assert!(Instant::now() < deadline, "not Running after 30 s: {data}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Everything the journey checks, on whatever backends `platform` runs.
fn journey(platform: &Platform) {
    assert!(
        platform.banner.contains("Warm-up, Demo web, Demo shell"),
        "{}",
        platform.banner
    );
    let mut alice = register_team(platform, "alice", "team-alice");
    let mut bob = register_team(platform, "bob", "team-bob");

    // The static flag.
    let warmup = challenge_id(&mut alice, platform, "Warm-up");
    assert_eq!(
        submit(&mut alice, platform, warmup, "FCTF{nope}"),
        "incorrect"
    );
    assert_eq!(
        submit(&mut alice, platform, warmup, "FCTF{welcome_to_fctf}"),
        "correct"
    );

    // The HTTP instance, through the gateway, with a browser-like cookie flow.
    let web = challenge_id(&mut alice, platform, "Demo web");
    let status = start_instance(&mut alice, platform, web);
    let url = status["access"]["http_url"].as_str().unwrap().to_owned();
    let token = status["access"]["token"].as_str().unwrap().to_owned();
    let target = url
        .strip_prefix(&format!("http://127.0.0.1:{}", platform.http))
        .unwrap_or_else(|| panic!("instance URL {url} is not on the gateway"));
    let mut browser = Client::default();
    let first = browser.send("GET", platform.http, target, None);
    assert_eq!(first.status, 302, "{}", first.text());
    assert_eq!(first.header("location"), Some("/"));
    assert!(browser.cookies.contains_key("FCTF_Auth_Token"));
    let page = browser.send("GET", platform.http, "/", None);
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("demo web challenge"),
        "{}",
        page.text()
    );
    let robots = browser
        .send("GET", platform.http, "/robots.txt", None)
        .text();
    let hidden = robots
        .lines()
        .find_map(|l| l.strip_prefix("Disallow: "))
        .unwrap()
        .trim()
        .to_owned();
    let web_flag = browser
        .send("GET", platform.http, &hidden, None)
        .text()
        .trim()
        .to_owned();
    assert!(web_flag.starts_with("FCTF{"), "{web_flag}");

    // Bob can neither see nor stop Alice's instance, and her flag is not his.
    let theirs = bob.api(
        platform,
        "GET",
        &format!("/challenges/{web}/instance"),
        None,
    );
    assert_eq!(theirs.status, 200);
    assert!(
        theirs.json()["data"]["instance"].is_null(),
        "{}",
        theirs.text()
    );
    let _ = bob.api(
        platform,
        "DELETE",
        &format!("/challenges/{web}/instance"),
        None,
    );
    assert_eq!(
        browser.send("GET", platform.http, "/", None).status,
        200,
        "Bob's stop did not touch Alice's instance"
    );
    assert_eq!(submit(&mut bob, platform, web, &web_flag), "incorrect");

    // Alice's correct submission stops her instance: its token opens nothing any more.
    assert_eq!(submit(&mut alice, platform, web, &web_flag), "correct");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let after = browser.send("GET", platform.http, "/", None);
        if after.status == 403 || after.status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a stopped instance's cookie still opens: {}",
            after.status
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The stopped instance's token URL opens nothing either, even in a fresh browser.
    let mut again = Client::default();
    let visit = again.send("GET", platform.http, &format!("/?fctftoken={token}"), None);
    assert_eq!(visit.status, 403, "{}", visit.text());

    // The TCP instance: token line and command in one write, as pwntools sends them.
    let shell = challenge_id(&mut alice, platform, "Demo shell");
    let status = start_instance(&mut alice, platform, shell);
    let token = status["access"]["token"].as_str().unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", platform.tcp)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(format!("{token}\nflag\nquit\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    assert!(text.contains("access granted"), "{text}");
    let tcp_flag = text
        .split(|c: char| c.is_whitespace() || c == '>')
        .find(|w| w.starts_with("FCTF{"))
        .unwrap_or_else(|| panic!("no flag in {text:?}"))
        .to_owned();
    assert_eq!(submit(&mut alice, platform, shell, &tcp_flag), "correct");

    // Bob solves the warm-up after Alice: the board orders them by score.
    assert_eq!(
        submit(&mut bob, platform, warmup, "FCTF{welcome_to_fctf}"),
        "correct"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let board = alice.api(platform, "GET", "/scoreboard", None).json();
        let rows = board["data"].as_array().unwrap().clone();
        let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
        let scores: Vec<i64> = rows.iter().filter_map(|r| r["score"].as_i64()).collect();
        if names.starts_with(&["team-alice", "team-bob"]) && scores.starts_with(&[600, 100]) {
            break;
        }
        assert!(Instant::now() < deadline, "scoreboard: {board}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // An admin lists instances and force-stops one.
    let status = start_instance(&mut bob, platform, web);
    let bob_instance = status["instance"].as_str().unwrap().to_owned();
    let mut admin = Client::token(&platform.admin_token);
    let list = admin.api(platform, "GET", "/instances", None);
    assert_eq!(list.status, 200, "{}", list.text());
    assert!(list.text().contains(&bob_instance), "{}", list.text());
    let team = status["key"]["team"].as_i64().unwrap();
    let stop = admin.api(
        platform,
        "DELETE",
        &format!("/instances/{team}/{web}"),
        None,
    );
    assert_eq!(stop.status, 200, "{}", stop.text());
    let player_list = bob.api(platform, "GET", "/instances", None);
    assert_eq!(player_list.status, 403, "players do not get the admin list");
}

#[test]
fn journey_on_the_embedded_default() {
    let scratch = Scratch::new();
    let platform = start(&scratch, None);
    journey(&platform);
    let status = platform.interrupt();
    assert_eq!(status.code(), Some(0));
    assert_no_instances_left(&scratch);
}

#[test]
fn journey_on_redis_rabbitmq_and_mariadb() {
    let scratch = Scratch::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let database = runtime
        .block_on(fctf_core::db::ScratchDatabase::create(
            &std::env::var("FCTF_TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned()),
            4,
        ))
        .expect("MariaDB on 127.0.0.1:3306 (run `bash .ci/run`, which starts it)");
    let unique = uuid_like();
    let token_key = scratch.file("token.key", SECRET);
    let signing_key = scratch.file("signing.key", &SECRET.replace('m', "n"));
    let base_url = database_url(&database.name);
    let config = scratch.file(
        "fctf.toml",
        &format!(
            "[tokens]\nkeys = [{{ kid = \"k1\", secret_file = \"{}\" }}]\n\n\
             [signing]\nkeys = [{{ kid = \"s1\", secret_file = \"{}\" }}]\n\n\
             [store]\nbackend = \"redis\"\nkey_prefix = \"fctf-journey:{unique}:\"\n\n\
             [queue]\nbackend = \"rabbitmq\"\nexchange = \"journey_ex_{unique}\"\n\
             queue = \"journey_q_{unique}\"\n\n\
             [database]\nurl = \"{base_url}\"\n",
            token_key.display(),
            signing_key.display(),
        ),
    );
    std::fs::set_permissions(
        &token_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(
        &signing_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let platform = start(&scratch, Some(&config));
    assert!(
        platform.banner.contains("store redis, queue rabbitmq"),
        "{}",
        platform.banner
    );
    journey(&platform);
    let status = platform.interrupt();
    assert_eq!(status.code(), Some(0));
    assert_no_instances_left(&scratch);
    runtime.block_on(database.drop_database()).unwrap();
}

pub(super) fn database_url(name: &str) -> String {
    let admin = std::env::var("FCTF_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

pub(super) fn uuid_like() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    )
}

/// After `fctf up` stopped, no instance program of this scratch directory is alive: the local
/// runtime's state directory holds no instance file and no `demo-challenge` process runs from it.
fn assert_no_instances_left(scratch: &Scratch) {
    let dir = scratch.dir.join("data/instances");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "instances left behind: {left:?}");
}
