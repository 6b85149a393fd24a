//! `gw_tcp_load`: the TCP side of the gateway load benchmark (`benches/gateway/tcp.sh`): the
//! backend, and two load generators that speak the gateway's TCP protocol when given a token.
//!
//! ```text
//! gw_tcp_load backend  --listen 127.0.0.1:P
//! gw_tcp_load bulk     --target 127.0.0.1:P [--token T] [--conns 4] [--secs 10]
//! gw_tcp_load connrate --target 127.0.0.1:P [--token T] [--concurrency 32] [--secs 10]
//! gw_tcp_load idle     --target 127.0.0.1:P [--token T] [--conns 10000] [--secs 10]
//! ```
//!
//! - `backend`: per connection, reads the first line; `ping` is answered `pong` and the
//!   connection then closes after the client does; `bulk` makes the rest of the stream a
//!   discarded byte sink (nothing is echoed, so the measured direction is client → backend).
//! - `bulk`: `conns` connections each send `bulk\n` then zeros in 64 KiB writes for `secs`;
//!   prints `FCTF_TCP_BULK bytes=N secs=S gbit_per_s=G`.
//! - `connrate`: `concurrency` loops, each: connect, (token line and the gateway's answer),
//!   `ping\n`, read `pong`, close; prints `FCTF_TCP_CONNRATE conns=N secs=S per_s=R p50_us=A
//!   p99_us=B errors=E`.
//! - `idle`: opens `conns` sessions (64 at a time), prints `FCTF_TCP_IDLE opened=N failed=F`
//!   once they are all open, holds them for `secs`, then closes them (memory per idle session).
//!
//! With `--token`, the token line is sent at once with what follows (as pwntools does) and the
//! gateway's `token: ` prompt and `access granted` line are read off before the payload's answer,
//! so the measured connection includes the whole gateway handshake.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "usage: gw_tcp_load backend --listen ADDR\n       gw_tcp_load bulk --target ADDR [--token T] [--conns N] [--secs S]\n       gw_tcp_load connrate --target ADDR [--token T] [--concurrency N] [--secs S]\n       gw_tcp_load idle --target ADDR [--token T] [--conns N] [--secs S]";

/// The gateway's answer to a good token line.
const GRANTED: &str = "access granted";

#[derive(Debug, Default)]
struct Args {
    listen: Option<String>,
    target: Option<String>,
    token: Option<String>,
    conns: usize,
    concurrency: usize,
    secs: u64,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        conns: 4,
        concurrency: 32,
        secs: 10,
        ..Args::default()
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} {v:?}: not a number"))
        };
        match flag.as_str() {
            "--listen" => parsed.listen = Some(value),
            "--target" => parsed.target = Some(value),
            "--token" => parsed.token = Some(value),
            "--conns" => {
                parsed.conns = usize::try_from(number(&value)?).map_err(|e| e.to_string())?
            }
            "--concurrency" => {
                parsed.concurrency = usize::try_from(number(&value)?).map_err(|e| e.to_string())?;
            }
            "--secs" => parsed.secs = number(&value)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(mode) = argv.next() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let args = match parse(argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("gw_tcp_load: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gw_tcp_load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match mode.as_str() {
            "backend" => backend(args.listen.ok_or("--listen is required")?).await,
            "bulk" => bulk(&args).await,
            "connrate" => connrate(&args).await,
            "idle" => idle(&args).await,
            other => Err(format!("unknown mode {other}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gw_tcp_load: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn backend(listen: String) -> Result<(), String> {
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = backend_session(stream).await;
        });
    }
}

async fn backend_session(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut first = Vec::with_capacity(16);
    (&mut reader).take(64).read_until(b'\n', &mut first).await?;
    if first == b"ping\n" {
        write.write_all(b"pong\n").await?;
    }
    // Drain whatever follows (the bulk stream, or the EOF of a ping client).
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
    }
}

/// Connects and, with a token, sends the token line followed by `payload` in one write and
/// reads the gateway's prompt and grant; without, sends `payload`. Returns the stream's reader
/// (positioned after the grant) and writer.
async fn open(
    target: &str,
    token: Option<&str>,
    payload: &[u8],
) -> std::io::Result<(
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
)> {
    let stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    match token {
        Some(token) => {
            let mut first = Vec::with_capacity(token.len() + 1 + payload.len());
            first.extend_from_slice(token.as_bytes());
            first.push(b'\n');
            first.extend_from_slice(payload);
            write.write_all(&first).await?;
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            if !line.contains(GRANTED) {
                return Err(std::io::Error::other(format!(
                    "gateway refused: {}",
                    line.trim()
                )));
            }
        }
        None => write.write_all(payload).await?,
    }
    Ok((reader, write))
}

async fn bulk(args: &Args) -> Result<(), String> {
    let target = args.target.clone().ok_or("--target is required")?;
    let deadline = Duration::from_secs(args.secs);
    let total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.conns.max(1) {
        let (target, token, total) = (target.clone(), args.token.clone(), total.clone());
        tasks.push(tokio::spawn(async move {
            let (_reader, mut write) = open(&target, token.as_deref(), b"bulk\n").await?;
            let chunk = vec![0u8; 64 * 1024];
            while start.elapsed() < deadline {
                write.write_all(&chunk).await?;
                total.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            write.shutdown().await?;
            Ok::<_, std::io::Error>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = total.load(Ordering::Relaxed);
    println!(
        "FCTF_TCP_BULK bytes={bytes} secs={secs:.3} gbit_per_s={:.3}",
        bytes as f64 * 8.0 / secs / 1e9
    );
    Ok(())
}

async fn connrate(args: &Args) -> Result<(), String> {
    let target = args.target.clone().ok_or("--target is required")?;
    let deadline = Duration::from_secs(args.secs);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (target, token, stop) = (target.clone(), args.token.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < deadline {
                let t0 = Instant::now();
                match one_connection(&target, token.as_deref()).await {
                    Ok(()) => {
                        latencies.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX))
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.map_err(|e| e.to_string())?;
        all.extend(latencies);
        errors += e;
    }
    stop.store(true, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            0
        } else {
            let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
            all[i]
        }
    };
    println!(
        "FCTF_TCP_CONNRATE conns={} secs={secs:.3} per_s={:.1} p50_us={} p99_us={} errors={errors}",
        all.len(),
        all.len() as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

async fn one_connection(target: &str, token: Option<&str>) -> std::io::Result<()> {
    let (mut reader, mut write) = open(target, token, b"ping\n").await?;
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if line != "pong\n" {
        return Err(std::io::Error::other(format!("unexpected answer {line:?}")));
    }
    write.shutdown().await?;
    Ok(())
}

async fn idle(args: &Args) -> Result<(), String> {
    let target = args.target.clone().ok_or("--target is required")?;
    let wanted = args.conns.max(1);
    let mut held = Vec::with_capacity(wanted);
    let mut failed = 0usize;
    while held.len() + failed < wanted {
        let batch = (wanted - held.len() - failed).min(64);
        let mut opening = Vec::with_capacity(batch);
        for _ in 0..batch {
            let (target, token) = (target.clone(), args.token.clone());
            opening.push(tokio::spawn(async move {
                let (mut reader, write) = open(&target, token.as_deref(), b"ping\n").await?;
                let mut line = String::new();
                reader.read_line(&mut line).await?;
                Ok::<_, std::io::Error>((reader, write))
            }));
        }
        for task in opening {
            match task.await.map_err(|e| e.to_string())? {
                Ok(session) => held.push(session),
                Err(_) => failed += 1,
            }
        }
    }
    println!("FCTF_TCP_IDLE opened={} failed={failed}", held.len());
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    drop(held);
    Ok(())
}
