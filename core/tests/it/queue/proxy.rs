//! A loopback TCP proxy in front of the broker that a test can cut or stall, so connection loss
//! and a stalled broker are tested without touching the shared RabbitMQ.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    addr: SocketAddr,
    control: Arc<Control>,
    acceptor: JoinHandle<()>,
}

struct Control {
    upstream: String,
    /// New connections are closed at once.
    refusing: AtomicBool,
    /// Bytes stop flowing (both ways) while true.
    frozen: watch::Sender<bool>,
    relays: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    /// Starts relaying a loopback port to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let control = Arc::new(Control {
            upstream: upstream.to_owned(),
            refusing: AtomicBool::new(false),
            frozen: watch::channel(false).0,
            relays: Mutex::new(Vec::new()),
        });
        let acceptor = tokio::spawn(accept_loop(listener, Arc::clone(&control)));
        Proxy {
            addr,
            control,
            acceptor,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Closes every relayed connection and refuses new ones: the broker "goes away".
    pub fn cut(&self) {
        self.control.refusing.store(true, Ordering::SeqCst);
        for relay in self.control.relays.lock().expect("relays").drain(..) {
            relay.abort();
        }
    }

    /// Accepts and relays connections again: the broker "is back".
    pub fn restore(&self) {
        self.control.refusing.store(false, Ordering::SeqCst);
    }

    /// Stops (true) or resumes (false) the flow of bytes without closing anything.
    pub fn freeze(&self, frozen: bool) {
        self.control.frozen.send_replace(frozen);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, control: Arc<Control>) {
    while let Ok((client, _)) = listener.accept().await {
        if control.refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(&control.upstream).await else {
            continue;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let up = relay(client_read, server_write, control.frozen.subscribe());
        let down = relay(server_read, client_write, control.frozen.subscribe());
        let handle = tokio::spawn(async move {
            // Either direction ending ends the connection, as a dead peer would.
            tokio::select! {
                () = up => {}
                () = down => {}
            }
        });
        control.relays.lock().expect("relays").push(handle);
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while *frozen.borrow_and_update() {
            if frozen.changed().await.is_err() {
                return;
            }
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = frozen.changed() => continue,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
