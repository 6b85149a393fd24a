//! What the chaos run starts and breaks: its own Redis server (stopped, frozen, restarted), a
//! cuttable TCP proxy in front of the shared RabbitMQ (the shared broker is never restarted),
//! MariaDB through the `mariadb` client (its own scratch database's connections killed), and
//! the `fctf` role processes (killed with SIGKILL and started again).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to `limit`) until something accepts connections on `port`.
pub fn wait_port(what: &str, port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} does not accept connections on {port} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status();
}

/// Fails loudly (with the install command) unless `program` runs.
pub fn require_tool(program: &str, install: &str) {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(found, "`{program}` is needed by this test: {install}");
}

/// A redis-server of the test's own, on a free port, with an append-only file (fsync always) so
/// a restart keeps what was written.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start(dir: &Path) -> RedisServer {
        require_tool("redis-server", "apt-get install -y redis-server");
        std::fs::create_dir_all(dir).unwrap();
        let mut server = RedisServer {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir.to_str().unwrap(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.pong() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pong(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 16];
        stream.write_all(b"PING\r\n").is_ok()
            && stream
                .read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGSTOP for `pause`, then SIGCONT: a Redis that stops answering without closing anything.
    pub fn freeze(&self, pause: Duration) {
        signal(self.pid(), "STOP");
        std::thread::sleep(pause);
        signal(self.pid(), "CONT");
    }

    /// Stopped (SIGTERM: connections closed, refused while down), down for `down`, started
    /// again on the same port and files.
    pub fn restart(&mut self, down: Duration) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
        std::thread::sleep(down);
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP proxy to `upstream` that can be cut (every connection closed, new ones closed at once)
/// and restored: a broker restart as its clients see it, without restarting the shared broker.
#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let proxy = Proxy {
            port,
            cut: Arc::new(AtomicBool::new(false)),
            open: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (cut, open, stop) = (proxy.cut.clone(), proxy.open.clone(), proxy.stop.clone());
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut all = open.lock().unwrap();
                all.retain(|s| s.peer_addr().is_ok());
                for s in [&client, &server] {
                    if let Ok(s) = s.try_clone() {
                        all.push(s);
                    }
                }
                drop(all);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        proxy
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// The MariaDB server of the tests, through the `mariadb` client.
#[derive(Clone, Debug)]
pub struct Mariadb {
    host: String,
    port: String,
    user: String,
    password: Option<String>,
}

impl Mariadb {
    /// From a `mysql://user[:password]@host[:port]/db` URL.
    pub fn from_url(url: &str) -> Mariadb {
        require_tool("mariadb", "apt-get install -y mariadb-client");
        let rest = url.strip_prefix("mysql://").unwrap_or(url);
        let (auth, rest) = rest.split_once('@').unwrap_or(("root", rest));
        let (user, password) = match auth.split_once(':') {
            Some((u, p)) => (u.to_owned(), Some(p.to_owned())),
            None => (auth.to_owned(), None),
        };
        let hostport = rest.split('/').next().unwrap_or("127.0.0.1:3306");
        let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
        Mariadb {
            host: host.to_owned(),
            port: port.to_owned(),
            user,
            password,
        }
    }

    /// Runs `sql`; the rows, tab-separated, one a line.
    pub fn query(&self, sql: &str) -> String {
        let mut command = Command::new("mariadb");
        command.args([
            "-h", &self.host, "-P", &self.port, "-u", &self.user, "-N", "-B", "-e", sql,
        ]);
        if let Some(password) = &self.password {
            command.env("MYSQL_PWD", password);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "mariadb {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// One number.
    pub fn count(&self, sql: &str) -> i64 {
        self.query(sql)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{sql}"))
    }

    /// KILLs every connection to `database` (the platform's pools must reconnect); returns how
    /// many there were.
    pub fn kill_connections(&self, database: &str) -> usize {
        let ids = self.query(&format!(
            "SELECT id FROM information_schema.processlist \
             WHERE db = '{database}' AND id <> CONNECTION_ID()"
        ));
        let ids: Vec<&str> = ids.lines().filter(|l| !l.trim().is_empty()).collect();
        for id in &ids {
            // A connection may end between the list and the KILL.
            let _ = Command::new("mariadb")
                .args([
                    "-h",
                    &self.host,
                    "-P",
                    &self.port,
                    "-u",
                    &self.user,
                    "-e",
                    &format!("KILL {id}"),
                ])
                .envs(self.password.iter().map(|p| ("MYSQL_PWD", p.as_str())))
                .output();
        }
        ids.len()
    }
}

/// One `fctf` role process, with its output in a log file; killed when dropped.
#[derive(Debug)]
pub struct Role {
    pub name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    pub starts: u32,
}

impl Role {
    pub fn start(name: &str, args: &[&str], envs: &[(&str, String)], logs: &Path) -> Role {
        let mut role = Role {
            name: name.to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            log: logs.join(format!("{name}.log")),
            child: None,
            starts: 0,
        };
        role.spawn();
        role
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = crate::fctf()
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL (nothing settled), then started again.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and the exit status (within 60 s).
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not stop within 60 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to `limit`) for a line starting with `prefix` after the `nth` (1-based)
    /// occurrence of `marker` in the log; returns the rest of that line.
    pub fn wait_line(&mut self, marker: &str, nth: usize, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if let Some((at, _)) = log.match_indices(marker).nth(nth - 1) {
                let after = &log[at..];
                if let Some(line) = BufReader::new(after.as_bytes())
                    .lines()
                    .map_while(Result::ok)
                    .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned))
                {
                    return line.trim().to_owned();
                }
            }
            assert!(
                self.running(),
                "{} exited; its log:\n{}",
                self.name,
                tail(&log)
            );
            assert!(
                Instant::now() < deadline,
                "{} printed no {prefix:?} within {limit:?}; its log:\n{}",
                self.name,
                tail(&log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of a log, for a failure message.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
