//! `contestant_load`: flag submissions per second and scoreboard reads per second through the
//! real Contestant Service (issue 4's benchmark; goals >= 5,000 submissions/s and scoreboard
//! p99 <= 5 ms with 10,000 teams and 100,000 solves on MariaDB).
//!
//! ```text
//! contestant_load [--teams 10000] [--solves 100000] [--challenges 100] [--clients 64]
//!                 [--secs 10] [--phases wrong,correct,mixed,board,top] [--pool 32]
//!                 [--db mysql://root@127.0.0.1:3306/test] [--redis redis://127.0.0.1:6379]
//! ```
//!
//! `--pool`: the service's database pool size (connections to MariaDB).
//!
//! Setup: a scratch database on the MariaDB server of `--db` (created, migrated with the
//! project's migrations, dropped at the end), Redis under a key prefix of its own, and the whole
//! Contestant Service router (`fctf_control::contestant::serve`, with the per-IP and per-user
//! limits and every middleware) on a loopback port, in a runtime of its own. The contest is
//! seeded in bulk with multi-row INSERTs (not through the API): `--teams` teams of one player
//! each with an API token, `--challenges` challenges (half static, half dynamic, one static
//! flag each) and `--solves` solves spread evenly over the teams, each with its correct
//! submission row.
//!
//! Then, for `--secs` each, `--clients` tasks on keep-alive HTTP/1.1 connections send:
//!
//! - `wrong`: `POST /api/v1/challenges/attempt` with a wrong flag, each request for another
//!   (team, unsolved challenge) pair;
//! - `correct`: the correct flag of a (team, challenge) pair not solved yet: each is a new solve
//!   (the scoreboard is invalidated each time);
//! - `mixed`: 80 % wrong, 10 % correct, 10 % a repeat of an earlier solve (`already_solved`);
//! - `board`: `GET /api/v1/scoreboard` (anonymous, every team: the whole list);
//! - `top`: `GET /api/v1/scoreboard/top/10`.
//!
//! Per phase it prints a `FCTF_CONTESTANT` line: requests, seconds, per second, p50/p99/max
//! latency (client side, request written to answer read) and the answers by outcome, which must
//! be what the phase sent (any other outcome is counted in `unexpected`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fctf_control::contestant::accounts::testkit::RecordingDeployment;
use fctf_control::contestant::{AppState, serve};
use fctf_core::clock::unix_now_millis;
use fctf_core::config::Config;
use fctf_core::db::{Database, ScratchDatabase};
use fctf_core::store::RedisStore;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const USAGE: &str = "usage: contestant_load [--teams N] [--solves N] [--challenges N] [--clients N] [--secs S] [--phases wrong,correct,mixed,board,top] [--pool N] [--db URL] [--redis URL]";

#[derive(Debug, Clone)]
struct Args {
    teams: u64,
    solves: u64,
    challenges: u64,
    clients: u64,
    secs: u64,
    phases: Vec<String>,
    pool: u32,
    db: String,
    redis: String,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        teams: 10_000,
        solves: 100_000,
        challenges: 100,
        clients: 64,
        secs: 10,
        phases: ["wrong", "correct", "mixed", "board", "top"]
            .map(str::to_owned)
            .to_vec(),
        pool: 32,
        db: "mysql://root@127.0.0.1:3306/test".to_owned(),
        redis: "redis://127.0.0.1:6379".to_owned(),
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} {value:?}: not a positive number\n{USAGE}"))
        };
        match flag.as_str() {
            "--teams" => parsed.teams = number()?,
            "--solves" => parsed.solves = number()?,
            "--challenges" => parsed.challenges = number()?,
            "--clients" => parsed.clients = number()?,
            "--secs" => parsed.secs = number()?,
            "--phases" => parsed.phases = value.split(',').map(str::to_owned).collect(),
            "--pool" => parsed.pool = u32::try_from(number()?).map_err(|e| e.to_string())?,
            "--db" => parsed.db = value,
            "--redis" => parsed.redis = value,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if parsed.solves / parsed.teams >= parsed.challenges {
        return Err("--solves per team must be fewer than --challenges".to_owned());
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // The service gets a runtime of its own (its own worker threads), as in production; the
    // load generator runs on this one.
    let server_rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("service")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("server runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client_rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("client")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("client runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client_rt.block_on(run(&args, server_rt.handle().clone())) {
        Ok(clean) if clean => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("some answers were not what the phase sent (see `unexpected`)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("contestant_load: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sets up, runs the phases, tears down. True when every answer was the expected one.
async fn run(args: &Args, server: tokio::runtime::Handle) -> Result<bool, BoxError> {
    let scratch = ScratchDatabase::create(&args.db, args.pool).await?;
    let result = run_on(args, server, &scratch.db).await;
    if let Err(e) = scratch.drop_database().await {
        eprintln!("dropping the scratch database: {e}");
    }
    result
}

async fn run_on(
    args: &Args,
    server: tokio::runtime::Handle,
    db: &Database,
) -> Result<bool, BoxError> {
    db.migrate().await?;
    let started = Instant::now();
    let seed = seed(db, args).await?;
    eprintln!(
        "seeded {} teams, {} challenges, {} solves in {:.1}s",
        args.teams,
        args.challenges,
        seed.solved.iter().map(Vec::len).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );

    let prefix = format!("fctf-bench-{}:", uuid::Uuid::new_v4().simple());
    let mut config = Config::default();
    config.contestant.api_ip_per_sec = 1_000_000;
    config.contestant.api_ip_burst = 10_000_000;
    config.contestant.api_user_per_sec = 1_000_000;
    config.contestant.api_user_burst = 10_000_000;
    config.contestant.wrong_flags_per_min = 10_000;
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let db_for_server = db.clone();
    let redis = args.redis.clone();
    let served = server.spawn(async move {
        let store = RedisStore::connect(&redis, &prefix, Duration::from_secs(5))
            .await
            .map_err(|e| format!("redis: {e}"))?;
        let state = AppState::new(
            db_for_server,
            Arc::new(store),
            config,
            Arc::new(RecordingDeployment::default()),
        )
        .await
        .map_err(|e| format!("state: {e}"))?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        serve(listener, None, state, async {
            let _ = stop_rx.await;
        })
        .await
        .map_err(|e| e.to_string())
    });

    // Wait until it answers, and compute the first snapshot (as a running service would have).
    let mut conn = connect_retrying(addr).await?;
    let (status, _) = conn.send(&get_request("/api/v1/scoreboard")).await?;
    if status != 200 {
        return Err(format!("first scoreboard read answered {status}").into());
    }

    let plan = Arc::new(Plan::new(args, seed));
    // Each client's progress (new solves made) carries over from phase to phase.
    let clients: Arc<Vec<tokio::sync::Mutex<Client>>> = Arc::new(
        (0..args.clients)
            .map(|c| tokio::sync::Mutex::new(Client::new(&plan, c)))
            .collect(),
    );
    let mut clean = true;
    for phase in &args.phases {
        let kind = match phase.as_str() {
            "wrong" => Phase::Wrong,
            "correct" => Phase::Correct,
            "mixed" => Phase::Mixed,
            "board" => Phase::Board,
            "top" => Phase::Top,
            other => return Err(format!("unknown phase {other:?}").into()),
        };
        let mut report = run_phase(addr, args, plan.clone(), clients.clone(), kind).await?;
        clean &= report.unexpected == 0 && report.errors == 0;
        report.print(phase, args);
    }

    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(10), served).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e.into()),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => eprintln!("the service did not stop within 10 s"),
    }
    Ok(clean)
}

/// What the seed wrote: each team's token and solved challenges (ids), the challenge ids.
#[derive(Debug)]
struct Seed {
    tokens: Vec<String>,
    /// Per team (index = team id - 1): the challenge ids it solved.
    solved: Vec<Vec<i64>>,
    challenges: Vec<i64>,
}

fn flag_of(challenge: i64) -> String {
    format!("flag{{bench-{challenge}}}")
}

/// Runs `INSERT INTO {head} VALUES {rows}` in multi-row statements of [`CHUNK`] rows.
async fn insert_rows(
    db: &Database,
    head: &str,
    rows: impl Iterator<Item = String>,
) -> Result<(), BoxError> {
    const CHUNK: usize = 2_000;
    let rows: Vec<String> = rows.collect();
    for batch in rows.chunks(CHUNK) {
        let sql = format!("INSERT INTO {head} VALUES {}", batch.join(","));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(db.pool())
            .await?;
    }
    Ok(())
}

/// Seeds the contest in bulk (ids are explicit, so the rows can name each other).
async fn seed(db: &Database, args: &Args) -> Result<Seed, BoxError> {
    let now = i64::try_from(unix_now_millis())?;
    let teams = i64::try_from(args.teams)?;
    let challenges = i64::try_from(args.challenges)?;
    let per_team = i64::try_from(args.solves / args.teams)?;
    let extra = i64::try_from(args.solves % args.teams)?;
    let run = uuid::Uuid::new_v4().simple().to_string();

    insert_rows(
        db,
        "challenges (id, name, category, description, value, type, initial, minimum, decay, \
         decay_function, state, created_ms)",
        (1..=challenges).map(|c| {
            if c % 2 == 0 {
                format!(
                    "({c}, 'chal-{c}', 'cat-{}', 'bench', 500, 'dynamic', 500, 100, 5000, \
                     'logarithmic', 'visible', {now})",
                    c % 7
                )
            } else {
                format!(
                    "({c}, 'chal-{c}', 'cat-{}', 'bench', {}, 'standard', NULL, NULL, NULL, \
                     'linear', 'visible', {now})",
                    c % 7,
                    100 + 10 * (c % 20)
                )
            }
        }),
    )
    .await?;
    insert_rows(
        db,
        "flags (challenge_id, type, content, data)",
        (1..=challenges).map(|c| format!("({c}, 'static', '{}', '')", flag_of(c))),
    )
    .await?;
    insert_rows(
        db,
        "teams (id, name, name_key, captain_id, invite_code, member_count, created_ms)",
        (1..=teams)
            .map(|t| format!("({t}, 'Team {t}', 'team {t}', {t}, 'inv-{run}-{t}', 1, {now})")),
    )
    .await?;
    insert_rows(
        db,
        "users (id, name, name_key, password, type, verified, team_id, session_uuid, created_ms)",
        (1..=teams).map(|t| {
            format!(
                "({t}, 'player {t}', 'player {t}', 'not-a-hash', 'user', 1, {t}, \
                 'sess-{run}-{t}', {now})"
            )
        }),
    )
    .await?;
    let tokens: Vec<String> = (1..=teams)
        .map(|t| format!("fctf_bench_{run}_{t}"))
        .collect();
    insert_rows(
        db,
        "tokens (user_id, type, digest, created_ms, expiration_ms)",
        tokens.iter().enumerate().map(|(i, token)| {
            let digest: String = Sha256::digest(token.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!(
                "({}, 'user', '{digest}', {now}, {})",
                i + 1,
                now + 86_400_000
            )
        }),
    )
    .await?;
    // Team t solves `per_team` (one more for the first `extra` teams) challenges, starting at
    // a per-team offset so every challenge gets solves; spread over the past hour.
    let mut solved = Vec::with_capacity(usize::try_from(teams)?);
    let mut rows = Vec::new();
    let mut id = 0i64;
    for t in 1..=teams {
        let count = per_team + i64::from(t <= extra);
        let mine: Vec<i64> = (0..count)
            .map(|k| (t * 7 + k * 13) % challenges + 1)
            .collect();
        let mut unique = mine.clone();
        unique.sort_unstable();
        unique.dedup();
        for c in &unique {
            id += 1;
            rows.push((id, *c, t, now - 3_600_000 + id));
        }
        solved.push(unique);
    }
    insert_rows(
        db,
        "submissions (id, challenge_id, user_id, team_id, ip, provided, type, created_ms)",
        rows.iter().map(|(id, c, t, at)| {
            format!(
                "({id}, {c}, {t}, {t}, '127.0.0.1', '{}', 'correct', {at})",
                flag_of(*c)
            )
        }),
    )
    .await?;
    insert_rows(
        db,
        "solves (id, submission_id, challenge_id, user_id, team_id, created_ms)",
        rows.iter()
            .map(|(id, c, t, at)| format!("({id}, {id}, {c}, {t}, {t}, {at})")),
    )
    .await?;
    Ok(Seed {
        tokens,
        solved,
        challenges: (1..=challenges).collect(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Wrong,
    Correct,
    Mixed,
    Board,
    Top,
}

/// Hands out (team, challenge) pairs so that no two requests of a run share a new solve and
/// wrong flags spread over many pairs.
#[derive(Debug)]
struct Plan {
    seed: Seed,
    /// Per team: the challenges not solved at seeding, in order; new solves take them from
    /// the front (an atomic cursor per client keeps clients on disjoint teams).
    unsolved: Vec<Vec<i64>>,
    clients: u64,
}

impl Plan {
    fn new(args: &Args, seed: Seed) -> Self {
        let unsolved = seed
            .solved
            .iter()
            .map(|mine| {
                seed.challenges
                    .iter()
                    .copied()
                    .filter(|c| !mine.contains(c))
                    .collect()
            })
            .collect();
        Self {
            seed,
            unsolved,
            clients: args.clients,
        }
    }

    /// The teams (0-based) client `client` submits for: every `clients`-th one.
    fn teams_of(&self, client: u64) -> Vec<usize> {
        (0..self.seed.tokens.len())
            .filter(|t| (*t as u64) % self.clients == client)
            .collect()
    }
}

fn attempt_request(token: &str, challenge: i64, flag: &str) -> Vec<u8> {
    let body = format!("{{\"challenge_id\":{challenge},\"submission\":\"{flag}\"}}");
    format!(
        "POST /api/v1/challenges/attempt HTTP/1.1\r\nHost: bench\r\nAuthorization: Token {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes()
}

/// What one request expects back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    Incorrect,
    Correct,
    AlreadySolved,
    Board,
}

impl Expect {
    fn name(self) -> &'static str {
        match self {
            Self::Incorrect => "incorrect",
            Self::Correct => "correct",
            Self::AlreadySolved => "already_solved",
            Self::Board => "board",
        }
    }

    fn matches(self, status: u16, body: &[u8]) -> bool {
        let has = |needle: &str| body.windows(needle.len()).any(|w| w == needle.as_bytes());
        status == 200
            && match self {
                Self::Incorrect => has("\"status\":\"incorrect\""),
                Self::Correct => has("\"status\":\"correct\""),
                Self::AlreadySolved => has("\"status\":\"already_solved\""),
                Self::Board => body.starts_with(b"{\"success\":true") || has("\"success\":true"),
            }
    }
}

/// One client's loop state over its teams.
struct Client {
    teams: Vec<usize>,
    /// Per own team: how far into its unsolved list new solves have gone.
    next_new: Vec<usize>,
    /// Per own team: solves made in this run (for `already_solved` repeats).
    made: Vec<Vec<i64>>,
    turn: usize,
    wrong_turn: usize,
}

impl Client {
    fn new(plan: &Plan, client: u64) -> Self {
        let teams = plan.teams_of(client);
        let n = teams.len();
        Self {
            teams,
            next_new: vec![0; n],
            made: vec![Vec::new(); n],
            turn: 0,
            wrong_turn: 0,
        }
    }

    /// The next request of `phase` (request bytes and what it expects), `None` when the
    /// client ran out of new solves.
    fn next(&mut self, plan: &Plan, phase: Phase, n: u64) -> Option<(Vec<u8>, Expect)> {
        let kind = match phase {
            Phase::Board => return Some((get_request("/api/v1/scoreboard"), Expect::Board)),
            Phase::Top => return Some((get_request("/api/v1/scoreboard/top/10"), Expect::Board)),
            Phase::Wrong => Expect::Incorrect,
            Phase::Correct => Expect::Correct,
            Phase::Mixed => match n % 10 {
                0 => Expect::Correct,
                1 => Expect::AlreadySolved,
                _ => Expect::Incorrect,
            },
        };
        self.turn = (self.turn + 1) % self.teams.len();
        let slot = self.turn;
        let team = self.teams[slot];
        let token = &plan.seed.tokens[team];
        let unsolved = &plan.unsolved[team];
        match kind {
            Expect::Correct => {
                // Take the next unsolved challenge of the first own team that has one left.
                for step in 0..self.teams.len() {
                    let slot = (slot + step) % self.teams.len();
                    let team = self.teams[slot];
                    let list = &plan.unsolved[team];
                    if self.next_new[slot] < list.len() {
                        let c = list[self.next_new[slot]];
                        self.next_new[slot] += 1;
                        self.made[slot].push(c);
                        return Some((
                            attempt_request(&plan.seed.tokens[team], c, &flag_of(c)),
                            Expect::Correct,
                        ));
                    }
                }
                None
            }
            Expect::AlreadySolved => {
                let c = self.made[slot]
                    .last()
                    .or_else(|| plan.seed.solved[team].first())
                    .copied()?;
                Some((
                    attempt_request(token, c, &flag_of(c)),
                    Expect::AlreadySolved,
                ))
            }
            _ => {
                // A wrong flag to a challenge the team has not solved and will not solve in
                // this run (taken from the back of its unsolved list).
                self.wrong_turn += 1;
                let back = unsolved.len() - self.next_new[slot];
                if back == 0 {
                    return None;
                }
                let span = back.min(8);
                let c = unsolved[unsolved.len() - 1 - self.wrong_turn % span];
                Some((
                    attempt_request(token, c, "flag{definitely-wrong}"),
                    Expect::Incorrect,
                ))
            }
        }
    }
}

#[derive(Debug, Default)]
struct Report {
    requests: u64,
    secs: f64,
    latencies_us: Vec<u32>,
    outcomes: BTreeMap<&'static str, u64>,
    unexpected: u64,
    errors: u64,
    first_unexpected: Option<String>,
}

impl Report {
    fn print(&mut self, phase: &str, args: &Args) {
        self.latencies_us.sort_unstable();
        let at = |q: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
            f64::from(self.latencies_us[i]) / 1000.0
        };
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "FCTF_CONTESTANT phase={phase} teams={} clients={} requests={} secs={:.2} per_s={:.0} \
             p50_ms={:.2} p99_ms={:.2} max_ms={:.2} {} unexpected={} errors={} pool={} load1={}",
            args.teams,
            args.clients,
            self.requests,
            self.secs,
            self.requests as f64 / self.secs,
            at(0.5),
            at(0.99),
            at(1.0),
            outcomes.join(" "),
            self.unexpected,
            self.errors,
            args.pool,
            load_average()
        );
        if let Some(first) = &self.first_unexpected {
            eprintln!("  first unexpected answer: {first}");
        }
    }
}

/// The one-minute load average (`/proc/loadavg`), for the record: the machine is shared.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

async fn run_phase(
    addr: SocketAddr,
    args: &Args,
    plan: Arc<Plan>,
    clients: Arc<Vec<tokio::sync::Mutex<Client>>>,
    phase: Phase,
) -> Result<Report, BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..args.clients {
        conns.push(connect_retrying(addr).await?);
    }
    let started = Instant::now();
    for (client, mut conn) in (0..args.clients).zip(conns) {
        let plan = plan.clone();
        let stop = stop.clone();
        let clients = clients.clone();
        tasks.push(tokio::spawn(async move {
            let index = usize::try_from(client).unwrap_or(usize::MAX);
            let mut state = clients[index].lock().await;
            let mut report = Report::default();
            let mut n = client;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let Some((request, expect)) = state.next(&plan, phase, n) else {
                    break;
                };
                let sent = Instant::now();
                match conn.send(&request).await {
                    Ok((status, body)) => {
                        let us = sent.elapsed().as_micros();
                        report
                            .latencies_us
                            .push(u32::try_from(us).unwrap_or(u32::MAX));
                        report.requests += 1;
                        if expect.matches(status, &body) {
                            *report.outcomes.entry(expect.name()).or_default() += 1;
                        } else {
                            report.unexpected += 1;
                            if report.first_unexpected.is_none() {
                                report.first_unexpected = Some(format!(
                                    "{status} {}",
                                    String::from_utf8_lossy(&body[..body.len().min(300)])
                                ));
                            }
                        }
                    }
                    Err(e) => {
                        report.errors += 1;
                        if report.first_unexpected.is_none() {
                            report.first_unexpected = Some(format!("transport: {e}"));
                        }
                        match connect_retrying(addr).await {
                            Ok(fresh) => conn = fresh,
                            Err(_) => break,
                        }
                    }
                }
            }
            report
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Report::default();
    for task in tasks {
        let part = task.await?;
        total.requests += part.requests;
        total.latencies_us.extend(part.latencies_us);
        for (k, v) in part.outcomes {
            *total.outcomes.entry(k).or_default() += v;
        }
        total.unexpected += part.unexpected;
        total.errors += part.errors;
        if total.first_unexpected.is_none() {
            total.first_unexpected = part.first_unexpected;
        }
    }
    total.secs = started.elapsed().as_secs_f64();
    Ok(total)
}

/// A keep-alive HTTP/1.1 connection: one request at a time.
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
}

async fn connect_retrying(addr: SocketAddr) -> Result<Conn, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                let (read, write) = stream.into_split();
                return Ok(Conn {
                    reader: BufReader::with_capacity(64 * 1024, read),
                    writer: write,
                    line: String::new(),
                });
            }
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

impl Conn {
    /// Sends `request`, reads the answer: status and body (`Content-Length` or chunked).
    async fn send(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        self.writer.write_all(request).await?;
        self.line.clear();
        if self.reader.read_line(&mut self.line).await? == 0 {
            return Err(bad("connection closed"));
        }
        let status: u16 = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line).await? == 0 {
                return Err(bad("closed in the headers"));
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                self.line.clear();
                self.reader.read_line(&mut self.line).await?;
                let size = usize::from_str_radix(self.line.trim(), 16)
                    .map_err(|_| bad("bad chunk size"))?;
                let start = body.len();
                body.resize(start + size, 0);
                self.reader.read_exact(&mut body[start..]).await?;
                self.line.clear();
                self.reader.read_line(&mut self.line).await?;
                if size == 0 {
                    break;
                }
            }
        } else {
            body.resize(length.ok_or_else(|| bad("no length"))?, 0);
            self.reader.read_exact(&mut body).await?;
        }
        Ok((status, body))
    }
}
