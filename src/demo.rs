//! `fctf demo-challenge http|tcp`: the demo instance programs that ship in the binary, so `fctf
//! up` runs a whole contest with nothing else installed. The local runtime starts them with
//! `PORT` (where to listen, on loopback) and `FLAG` (the team's dynamic flag) in the environment.
//!
//! - `http`: a small web page whose flag is one step away (`/robots.txt` names the hidden page).
//! - `tcp`: a line-based service: `help`, `flag`, `echo TEXT`, `quit`.

use std::net::SocketAddr;

use anyhow::{Context as _, anyhow};
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::DemoKind;
use crate::outcome::{Exit, Failure, OrExit as _};

/// The longest command line the TCP demo reads.
const MAX_LINE: usize = 1024;

/// Runs the demo program of `kind` until killed.
pub fn run(kind: DemoKind) -> Result<Exit, Failure> {
    let (addr, flag) = environment().or_exit(Exit::InvalidInput)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .or_exit(Exit::Software)?;
    runtime
        .block_on(async move {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            match kind {
                DemoKind::Http => serve_http(listener, flag).await,
                DemoKind::Tcp => serve_tcp(listener, flag).await,
            }
        })
        .or_exit(Exit::Software)?;
    Ok(Exit::Ok)
}

/// `PORT` and `FLAG` from the environment the runtime gives the instance.
fn environment() -> anyhow::Result<(SocketAddr, String)> {
    let port: u16 = std::env::var("PORT")
        .context("PORT is not set (the local runtime sets it)")?
        .parse()
        .context("PORT is not a port number")?;
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let addr = format!("{host}:{port}")
        .parse()
        .map_err(|_| anyhow!("HOST {host:?} is not an IP address"))?;
    let flag = std::env::var("FLAG").unwrap_or_else(|_| "FCTF{demo_flag_not_set}".to_owned());
    Ok((addr, flag))
}

/// The demo web challenge.
pub fn http_app(flag: String) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/robots.txt", get(robots))
        .route("/staff-only/flag.txt", get(flag_page))
        .with_state(std::sync::Arc::new(flag))
}

async fn serve_http(listener: TcpListener, flag: String) -> anyhow::Result<()> {
    axum::serve(listener, http_app(flag))
        .await
        .context("serving the demo web challenge")
}

async fn index() -> Html<&'static str> {
    Html(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Demo web \
         challenge</title></head><body><h1>Welcome to the demo web challenge</h1><p>The flag is \
         on this server, on a page no search engine is allowed to index.</p></body></html>\n",
    )
}

async fn robots() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "User-agent: *\nDisallow: /staff-only/flag.txt\n",
    )
}

async fn flag_page(State(flag): State<std::sync::Arc<String>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{flag}\n"),
    )
}

async fn serve_tcp(listener: TcpListener, flag: String) -> anyhow::Result<()> {
    let flag = std::sync::Arc::new(flag);
    loop {
        let (stream, _) = listener.accept().await.context("accepting")?;
        let flag = flag.clone();
        tokio::spawn(async move {
            let _ = tcp_session(stream, &flag).await;
        });
    }
}

/// One TCP session: a banner, then one answer per command line.
pub async fn tcp_session(stream: TcpStream, flag: &str) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"FCTF demo TCP challenge. Commands: help, flag, echo TEXT, quit\n> ")
        .await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut lines)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            write.write_all(b"line too long\n").await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let answer = answer(text.trim(), flag);
        match answer {
            Some(answer) => write.write_all(format!("{answer}\n> ").as_bytes()).await?,
            None => {
                write.write_all(b"bye\n").await?;
                return Ok(());
            }
        }
    }
}

/// The answer to one command; `None` ends the session.
fn answer(command: &str, flag: &str) -> Option<String> {
    let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
    Some(match verb {
        "quit" | "exit" => return None,
        "help" | "" => "commands: help, flag, echo TEXT, quit".to_owned(),
        "flag" => flag.to_owned(),
        "echo" => rest.to_owned(),
        other => format!("unknown command {other:?}; try help"),
    })
}

#[cfg(test)]
mod tests {
    use super::answer;

    #[test]
    fn commands_answer_as_documented() {
        assert_eq!(answer("flag", "FCTF{x}").as_deref(), Some("FCTF{x}"));
        assert_eq!(answer("echo hi there", "f").as_deref(), Some("hi there"));
        assert!(answer("help", "f").unwrap().contains("flag"));
        assert!(
            answer("rm -rf /", "f")
                .unwrap()
                .starts_with("unknown command")
        );
        assert_eq!(answer("quit", "f"), None);
    }
}
