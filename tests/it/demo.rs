//! `fctf demo-challenge http|tcp`: the demo instance programs read PORT and FLAG, serve on
//! loopback, and give the flag to whoever solves them (and to nobody on the first page).

use std::io::{BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{assert_exit, fctf};

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(kind: &str, flag: &str) -> (KillOnDrop, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = fctf()
        .args(["demo-challenge", kind])
        .env("PORT", port.to_string())
        .env("FLAG", flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (KillOnDrop(child), port)
}

fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                return stream;
            }
            Err(e) if Instant::now() > deadline => panic!("demo never listened: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn get(port: u16, path: &str) -> String {
    let mut stream = connect(port);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn http_demo_hides_the_flag_one_step_away() {
    let (_child, port) = start("http", "FCTF{http_demo_1}");
    let index = get(port, "/");
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert!(
        !index.contains("FCTF{"),
        "the first page does not give the flag away"
    );
    let robots = get(port, "/robots.txt");
    let hidden = robots
        .lines()
        .find_map(|l| l.strip_prefix("Disallow: "))
        .unwrap()
        .trim()
        .to_owned();
    let page = get(port, &hidden);
    assert!(page.contains("FCTF{http_demo_1}"), "{page}");
}

#[test]
fn tcp_demo_answers_commands_sent_in_one_write() {
    let (_child, port) = start("tcp", "FCTF{tcp_demo_1}");
    let mut stream = connect(port);
    stream.write_all(b"echo hello\nflag\nquit\n").unwrap();
    let mut text = String::new();
    BufReader::new(stream).read_to_string(&mut text).unwrap();
    assert!(text.contains("hello\n"), "{text}");
    assert!(text.contains("FCTF{tcp_demo_1}\n"), "{text}");
    assert!(text.ends_with("bye\n"), "{text}");
}

#[test]
fn demo_without_port_is_invalid_input() {
    let output = fctf()
        .args(["demo-challenge", "tcp"])
        .env_remove("PORT")
        .output()
        .unwrap();
    assert_exit(&output, 64);
    assert!(super::stderr(&output).contains("PORT is not set"));
}
