//! `/metrics` for the worker roles (`fctf consumer`, `fctf listener`): a minimal HTTP/1.1
//! responder of the Prometheus text a role renders. It answers `GET /metrics` (and `/healthz`
//! with `ok`), one request per connection, and nothing else, so it needs no web framework.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The Prometheus text exposition's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Longest request head read before the connection is answered 400 and closed.
const MAX_HEAD: usize = 8 * 1024;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Renders the metrics text at each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A bound `/metrics` listener, not serving yet.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Binds `listen` (`IP:PORT`).
    pub async fn bind(listen: &str) -> io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(listen).await?,
        })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; each connection on a task of its own.
    pub async fn serve(self, render: Render, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(answer(stream, render.clone()));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        tracing::warn!("metrics listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}

/// The response to a request whose head starts with `head`.
fn respond(head: &[u8], render: &Render) -> Vec<u8> {
    let line = head
        .split(|b| *b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim().to_owned())
        .unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", CONTENT_TYPE, render()),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

async fn answer(mut stream: TcpStream, render: Render) {
    let mut head = Vec::new();
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0_u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) || head.is_empty() {
        return;
    }
    let response = if head.len() >= MAX_HEAD {
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
    } else {
        respond(&head, &render)
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn metrics_health_and_everything_else() {
        let render: Render = Arc::new(|| "fctf_x_total 1\n".to_owned());
        let ok = text(respond(
            b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n",
            &render,
        ));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE));
        assert!(ok.contains("content-length: 15\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nfctf_x_total 1\n"), "{ok}");
        let health = text(respond(b"GET /healthz HTTP/1.1\r\n\r\n", &render));
        assert!(health.ends_with("ok\n"), "{health}");
        let missing = text(respond(b"GET /other HTTP/1.1\r\n\r\n", &render));
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = text(respond(b"POST /metrics HTTP/1.1\r\n\r\n", &render));
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }

    #[tokio::test]
    async fn serves_over_tcp_until_shutdown() {
        let server = MetricsServer::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(Arc::new(|| "fctf_y 2\n".to_owned()), async {
            let _ = stopped.await;
        }));
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let mut got = String::new();
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(got.ends_with("fctf_y 2\n"), "{got}");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .unwrap()
            .unwrap();
    }
}
