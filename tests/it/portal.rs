//! The Contestant Portal in a real browser: headless Chromium from Debian's packages, driven over
//! chromedriver's W3C WebDriver HTTP protocol by the tiny client below, against a real `fctf up`
//! subprocess on free ports (as `journey.rs` runs it).
//!
//! The journey, all through the page: register, create a team, solve the static challenge (a
//! wrong flag first, to see the message), start the HTTP instance, open it through the gateway
//! from the page's link, read the flag on the instance's pages, submit it, see the scoreboard
//! update; open a ticket, read a notification; then at 360 px wide: the pages fit with no
//! sideways scrolling, and the TCP instance shows its `nc` line, token and copy buttons.
//!
//! Every page is saved as a PNG under `$CARGO_TARGET_DIR/portal-screenshots/` (the path is
//! printed). Missing chromium or chromedriver fails the test with the `apt-get` command.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Scratch;
use super::journey::{dechunk, free_port, start};

const INSTALL: &str = "apt-get install -y chromium chromium-driver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

// ---- a plain HTTP/1.1 exchange (one connection per request, as journey.rs does) ----

fn http(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        payload.len()
    );
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(payload.as_bytes()).unwrap();
    // chromedriver keeps the connection open despite `Connection: close`: read the head, then
    // exactly `Content-Length` bytes (to the end of the stream without one).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break split;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "no header end in {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = raw[split + 4..].to_vec();
    match length {
        Some(length) => {
            while body.len() < length {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "the answer ended early");
                body.extend_from_slice(&buf[..n]);
            }
            body.truncate(length);
        }
        None => {
            stream.read_to_end(&mut body).unwrap();
        }
    }
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

// ---- chromedriver and a W3C WebDriver session ----

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

impl Driver {
    fn start() -> Self {
        let driver = which("chromedriver").unwrap_or_else(|| {
            panic!("chromedriver is not installed (Debian's chromium-driver): run `{INSTALL}`")
        });
        assert!(
            which("chromium").is_some(),
            "chromium is not installed: run `{INSTALL}`"
        );
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let (status, body) = http("GET", port, "/status", &[], None);
                let ready: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if status == 200 && ready["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One browser (a WebDriver session), deleted when dropped.
struct Browser<'d> {
    driver: &'d Driver,
    session: String,
    shots: PathBuf,
    suffix: &'static str,
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = http(
            "DELETE",
            self.driver.port,
            &format!("/session/{}", self.session),
            &[],
            None,
        );
    }
}

impl<'d> Browser<'d> {
    fn open(driver: &'d Driver, profile: &Path, shots: &Path) -> Self {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": which("chromium").unwrap(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                    "--window-size=1280,900", "--lang=en-US",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let (status, body) = http("POST", driver.port, "/session", &[], Some(&capabilities));
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "new session: {answer}");
        Self {
            driver,
            session: answer["value"]["sessionId"].as_str().unwrap().to_owned(),
            shots: shots.to_owned(),
            suffix: "",
        }
    }

    /// One WebDriver command; its `value`, or `Err` with the WebDriver error.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        // WebDriver POSTs always carry a JSON object.
        let body = (method == "POST").then(|| body.unwrap_or_else(|| json!({})));
        let (status, bytes) = http(
            method,
            self.driver.port,
            &format!("/session/{}{path}", self.session),
            &[],
            body.as_ref(),
        );
        let answer: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"value": String::from_utf8_lossy(&bytes)}));
        if status == 200 {
            Ok(answer["value"].clone())
        } else {
            Err(answer["value"].clone())
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The first element matching `css`, waited for up to `secs`.
    fn find_within(&self, css: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            match self.try_call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            ) {
                Ok(found) => return found[ELEMENT].as_str().unwrap().to_owned(),
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "no {css:?} within {secs} s ({e}); page text:\n{}",
                    self.page_text()
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn find(&self, css: &str) -> String {
        self.find_within(css, 15)
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/click"), None);
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/clear"), None);
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.call("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn attribute(&self, css: &str, name: &str) -> String {
        let element = self.find(css);
        self.call("GET", &format!("/element/{element}/attribute/{name}"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn page_text(&self) -> String {
        self.try_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": "return document.body ? document.body.innerText : ''", "args": []})),
        )
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
    }

    /// Waits until the text of `css` satisfies `ok` (up to `secs`); returns it.
    fn wait_text(&self, css: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let element = self.find_within(css, secs);
            let text = self
                .try_call("GET", &format!("/element/{element}/text"), None)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            if ok(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css:?} never became as expected within {secs} s; last text {text:?}"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn resize(&mut self, width: u32, height: u32, suffix: &'static str) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
        self.suffix = suffix;
    }

    /// Saves the viewport as `<name><suffix>.png`.
    fn shot(&self, name: &str) {
        // Let the focus ring and toasts settle, and start from the top of the page.
        self.script("window.scrollTo(0, 0); return true;", json!([]));
        // The whole page: the window grows to the page's height for the shot (at most 4000 px).
        let rect = self.call("GET", "/window/rect", None);
        let sizes = self.script(
            "return [document.documentElement.scrollHeight, window.innerHeight];",
            json!([]),
        );
        let extra = sizes[0].as_i64().unwrap_or(0) - sizes[1].as_i64().unwrap_or(0);
        if extra > 0 {
            let height = (rect["height"].as_i64().unwrap() + extra).min(4000);
            self.call(
                "POST",
                "/window/rect",
                Some(json!({"width": rect["width"], "height": height})),
            );
        }
        std::thread::sleep(Duration::from_millis(300));
        let png = self.call("GET", "/screenshot", None);
        if extra > 0 {
            self.call(
                "POST",
                "/window/rect",
                Some(json!({"width": rect["width"], "height": rect["height"]})),
            );
        }
        let bytes = base64_decode(png.as_str().unwrap());
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(self.shots.join(format!("{name}{}.png", self.suffix)), bytes).unwrap();
    }

    /// The page fits its width: no sideways scrolling.
    fn assert_fits(&self, page: &str) {
        let fits = self.script(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            json!([]),
        );
        let (scroll, inner) = (fits[0].as_i64().unwrap(), fits[1].as_i64().unwrap());
        assert!(
            scroll <= inner,
            "{page}: {scroll} px of content in a {inner} px window"
        );
    }

    /// Severe entries of the browser console (CSP violations, script errors, failed loads).
    fn console_errors(&self) -> Vec<String> {
        let Ok(entries) = self.try_call("POST", "/se/log", Some(json!({"type": "browser"}))) else {
            return Vec::new();
        };
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            // The page reads 401s and 404s as answers (signed out, no team); the console logs
            // every non-2xx fetch as a failed load.
            .filter(|e| {
                !e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Failed to load resource"))
            })
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn windows(&self) -> Vec<String> {
        self.call("GET", "/window/handles", None)
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_owned())
            .collect()
    }

    fn switch_to(&self, handle: &str) {
        self.call("POST", "/window", Some(json!({ "handle": handle })));
    }
}

/// Standard base64 (WebDriver's screenshots), without a crate for it.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/<profile>/fctf
            Path::new(env!("CARGO_BIN_EXE_fctf"))
                .parent()
                .and_then(Path::parent)
                .unwrap()
                .to_owned()
        });
    let dir = target.join("portal-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The score in the signed-in team's own row of the scoreboard.
fn my_score(browser: &Browser<'_>) -> i64 {
    browser
        .text("#scoreboard tr.mine td:last-child")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_portal_plays_the_whole_journey_in_chromium() {
    let driver = Driver::start();
    let scratch = Scratch::new();
    let platform = start(&scratch, None);
    let shots = screenshots_dir();
    println!("portal screenshots: {}", shots.display());
    let mut browser = Browser::open(&driver, &scratch.dir.join("profile"), &shots);
    let portal = format!("http://127.0.0.1:{}", platform.api);

    // An admin notification, for the notifications page.
    let (status, body) = http(
        "POST",
        platform.api,
        "/api/v1/notifications",
        &[("Authorization", &format!("Token {}", platform.admin_token))],
        Some(&json!({"title": "Welcome", "content": "The warm-up is worth 100 points."})),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // Signed out: the login page.
    browser.goto(&format!("{portal}/"));
    browser.find("#login-form");
    browser.shot("01-login");

    // Register: signed in, sent to the team page.
    browser.click("a[href='#/register']");
    browser.type_into("#register-name", "portal-alice");
    browser.type_into("#register-email", "portal-alice@example.org");
    browser.type_into("#register-password", "portal-password-1");
    browser.shot("02-register");
    browser.click("#register-form button[type=submit]");
    browser.find("#team-create-form");
    browser.shot("03-team-none");

    // Create a team: its page shows the member and the invite code.
    browser.type_into("#team-create-name", "team-portal");
    browser.click("#team-create-form button[type=submit]");
    browser.wait_text("#team-members", 15, |t| t.contains("portal-alice"));
    let invite = browser.text("#team-invite").trim().to_owned();
    assert!(!invite.is_empty());
    assert!(browser.text("#who").contains("team-portal"));
    browser.shot("04-team");

    // The challenges, by category.
    browser.click("a[data-nav=challenges]");
    browser.find("a[data-challenge='Warm-up']");
    browser.shot("05-challenges");

    // The static flag: a wrong one first (its message), then the right one.
    browser.click("a[data-challenge='Warm-up']");
    browser.find("#flag-form");
    // The description is Markdown, rendered as elements (never as HTML from the server).
    assert_eq!(browser.text("#challenge-description strong"), "submit it");
    assert_eq!(browser.text("#challenge-description code"), "FCTF{...}");
    assert_eq!(browser.attribute("#flag-msg", "aria-live"), "polite");
    browser.type_into("#flag-input", "FCTF{nope}");
    browser.click("#flag-submit");
    let wrong = browser.wait_text("#flag-msg", 15, |t| !t.is_empty() && t != "Checking…");
    assert!(
        browser.attribute("#flag-msg", "class").contains("bad"),
        "{wrong}"
    );
    browser.shot("06-challenge-wrong-flag");
    // A wrong answer may start a cooldown: wait for the button to come back.
    browser.wait_text("#flag-submit", 90, |t| t == "Submit");
    browser.type_into("#flag-input", "FCTF{welcome_to_fctf}");
    browser.click("#flag-submit");
    browser.wait_text("#flag-msg", 15, |t| t.to_lowercase().contains("correct"));
    assert!(browser.attribute("#flag-msg", "class").contains("ok"));
    browser.shot("07-challenge-solved");

    // Solved marker on the list; the scoreboard has the team with the warm-up's points.
    browser.click("a[data-nav=challenges]");
    browser.wait_text("a[data-challenge='Warm-up']", 15, |t| t.contains("Solved"));
    browser.click("a[data-nav=scoreboard]");
    browser.find("#scoreboard tr.mine");
    let after_warmup = my_score(&browser);
    assert!(after_warmup > 0, "{after_warmup}");
    browser.shot("08-scoreboard-warmup");

    // The HTTP instance: start it, watch it run, open it from the page's link.
    browser.click("a[data-nav=challenges]");
    browser.click("a[data-challenge='Demo web']");
    browser.click("#instance-start");
    browser.find_within("#instance-link", 90);
    browser.wait_text("#instance-state", 15, |t| t.contains("Running"));
    // "Start requested." holds only until the instance runs.
    browser.wait_text("#instance-msg", 15, |t| t.is_empty());
    browser.find("#instance-time");
    browser.shot("09-instance-running");
    let link = browser.attribute("#instance-link", "href");
    let gateway = format!("http://127.0.0.1:{}/", platform.http);
    assert!(link.starts_with(&format!("{gateway}?fctftoken=")), "{link}");
    let portal_window = browser.windows()[0].clone();
    browser.click("#instance-link");
    let deadline = Instant::now() + Duration::from_secs(15);
    let instance_window = loop {
        if let Some(w) = browser.windows().into_iter().find(|w| *w != portal_window) {
            break w;
        }
        assert!(Instant::now() < deadline, "the link opened no window");
        std::thread::sleep(Duration::from_millis(100));
    };
    browser.switch_to(&instance_window);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !browser.page_text().contains("demo web challenge") {
        assert!(
            Instant::now() < deadline,
            "the instance page did not open: {}",
            browser.page_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let url = browser.call("GET", "/url", None);
    assert_eq!(
        url.as_str(),
        Some(gateway.as_str()),
        "the gateway traded the one-time link for its cookie and a clean URL"
    );
    browser.shot("10-instance-page");
    // The flag is where robots.txt says not to look.
    browser.goto(&format!("{gateway}robots.txt"));
    let robots = browser.page_text();
    let hidden = robots
        .lines()
        .find_map(|l| l.strip_prefix("Disallow: "))
        .unwrap_or_else(|| panic!("{robots}"))
        .trim()
        .to_owned();
    browser.goto(&format!("{gateway}{}", hidden.trim_start_matches('/')));
    let flag = browser.page_text().trim().to_owned();
    assert!(flag.starts_with("FCTF{"), "{flag}");
    browser.shot("11-instance-flag");
    // A page on the gateway is same-site with the portal (same host, another port), so the
    // browser sends the Lax session cookie along with its requests to the API: the CSRF guard
    // must refuse them. A forged logout from the instance's page leaves the session alive.
    let forged = browser.call(
        "POST",
        "/execute/async",
        Some(json!({
            "script": "const done = arguments[arguments.length - 1];
                fetch(arguments[0], {method: 'POST', mode: 'no-cors', credentials: 'include'})
                    .then(() => done('sent'), (e) => done(String(e)));",
            "args": [format!("{portal}/api/v1/auth/logout")],
        })),
    );
    // The answer itself is unreadable to that page (`no-cors`, and CORP `same-origin` makes the
    // fetch fail): the server's counters show what happened.
    println!("forged logout from the instance's page: {forged}");
    let (_, metrics) = http("GET", platform.api_admin, "/metrics", &[], None);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(r#"route="/api/v1/auth/logout",status="403""#),
        "the forged logout reached the API and was refused:\n{metrics}"
    );
    browser.call("DELETE", "/window", None);
    browser.switch_to(&portal_window);
    browser.call("POST", "/refresh", None);
    browser.wait_text("#who", 15, |t| t.contains("portal-alice"));
    browser.find("#flag-form");

    // Submit it: correct, and the solve stops the instance.
    browser.type_into("#flag-input", &flag);
    browser.click("#flag-submit");
    browser.wait_text("#flag-msg", 15, |t| t.to_lowercase().contains("correct"));
    browser.wait_text("#instance-state", 30, |t| {
        t.contains("Stopping") || t.contains("Not running") || t.contains("Stopped")
    });
    browser.shot("12-instance-solved");

    // The scoreboard moved up by the web challenge's points.
    browser.click("a[data-nav=scoreboard]");
    browser.find("#scoreboard tr.mine");
    let deadline = Instant::now() + Duration::from_secs(20);
    while my_score(&browser) <= after_warmup {
        assert!(Instant::now() < deadline, "the scoreboard did not update");
        browser.goto(&format!("{portal}/#/challenges"));
        browser.goto(&format!("{portal}/#/scoreboard"));
        browser.find("#scoreboard tr.mine");
    }
    assert_eq!(browser.text("#scoreboard tr.mine td:first-child"), "1");
    browser.shot("13-scoreboard-updated");

    // Notifications and tickets.
    browser.click("a[data-nav=notifications]");
    browser.wait_text("#notifications", 15, |t| t.contains("Welcome"));
    browser.shot("14-notifications");
    browser.click("a[data-nav=tickets]");
    browser.type_into("#ticket-title", "The shell challenge");
    browser.type_into(
        "#ticket-content",
        "Does the shell instance accept pwntools' line endings?",
    );
    browser.click("#ticket-form button[type=submit]");
    browser.wait_text("#tickets", 15, |t| t.contains("The shell challenge"));
    browser.shot("15-tickets");

    // 360 px wide: every page fits, and the TCP instance shows the nc line and the token.
    browser.resize(360, 780, "-360");
    let width = browser.script("return window.innerWidth;", json!([]));
    assert!(width.as_i64().unwrap() <= 360, "{width}");
    for (page, ready, name) in [
        ("challenges", "a[data-challenge='Warm-up']", "05-challenges"),
        ("scoreboard", "#scoreboard tr.mine", "13-scoreboard-updated"),
        ("team", "#team-members", "04-team"),
        ("tickets", "#tickets", "15-tickets"),
        ("notifications", "#notifications", "14-notifications"),
    ] {
        browser.goto(&format!("{portal}/#/{page}"));
        browser.find(ready);
        browser.assert_fits(page);
        browser.shot(name);
    }
    browser.goto(&format!("{portal}/#/challenges"));
    browser.click("a[data-challenge='Demo shell']");
    browser.click("#instance-start");
    browser.find_within("#instance-nc", 90);
    let nc = browser.text("#instance-nc");
    assert!(nc.starts_with("nc "), "{nc}");
    assert!(!browser.text("#instance-token").trim().is_empty());
    browser.find("#instance-connection button");
    browser.assert_fits("challenge");
    browser.shot("16-instance-tcp");
    browser.click("#instance-stop");
    browser.wait_text("#instance-state", 30, |t| !t.contains("Running"));
    // Signed out again: the login page fits too.
    browser.click("#logout");
    browser.find("#login-form");
    browser.assert_fits("login");
    browser.shot("01-login");

    // A teammate registers and joins by the invite code.
    browser.click("a[href='#/register']");
    browser.type_into("#register-name", "portal-bob");
    // By keyboard alone: Enter submits the forms.
    browser.type_into("#register-password", "portal-password-2\u{E007}");
    browser.type_into("#team-join-code", &format!("{invite}\u{E007}"));
    let members = browser.wait_text("#team-members", 15, |t| t.contains("portal-bob"));
    assert!(members.contains("portal-alice (captain)"), "{members}");
    browser.assert_fits("team");
    browser.shot("17-team-joined");
    browser.click("a[data-nav=challenges]");
    browser.wait_text("a[data-challenge='Warm-up']", 15, |t| t.contains("Solved"));

    let errors = browser.console_errors();
    assert!(
        errors.is_empty(),
        "browser console errors (CSP violations, script errors):\n{}",
        errors.join("\n")
    );
    println!(
        "portal screenshots saved in {} ({} files)",
        shots.display(),
        std::fs::read_dir(&shots).unwrap().count()
    );
}
