//! A tiny open-loop HTTP/1.1 load generator (what `wrk2` does; `wrk2` is
//! not packaged in Debian and `h2load --rps` reports no percentiles).
//!
//! `C` keep-alive connections each send `RATE / C` requests per second on
//! a fixed schedule, whatever the server does. A request that could not be
//! sent on time because its connection was still waiting for the previous
//! answer is timed from when it *should* have been sent, so queueing shows
//! up in the percentiles (no coordinated omission). A request that is late
//! only because our own timer woke late (tokio's timer has 1 ms
//! granularity) is timed from when it was actually written.
//!
//! Every request carries `X-User-ID: user-N`, N cycling through `--users`
//! distinct values.
//!
//! ```text
//! openloop --addr 127.0.0.1:8080 --rate 10000 --connections 50 --duration 10 [--warmup 2] [--users 100000]
//! ```
//! Prints one line: `rate=… sent=… ok=… errors=… p50_us=… p90_us=… p99_us=… p999_us=… max_us=…`.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: SocketAddr,
    rate: f64,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    users: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        addr: "127.0.0.1:8080".parse().unwrap(),
        rate: 1000.0,
        connections: 50,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        users: 100_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value.parse().expect("--addr host:port"),
            "--rate" => args.rate = value.parse().expect("--rate N"),
            "--connections" => args.connections = value.parse().expect("--connections N"),
            "--duration" => args.duration = Duration::from_secs_f64(value.parse().expect("--duration S")),
            "--warmup" => args.warmup = Duration::from_secs_f64(value.parse().expect("--warmup S")),
            "--users" => args.users = value.parse().expect("--users N"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u32>,
    errors: u64,
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let outcome = rt.block_on(run(&args));
    let mut lat = outcome.latencies_us;
    lat.sort_unstable();
    let pct = |p: f64| if lat.is_empty() { 0 } else { lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] };
    println!(
        "rate={} sent={} ok={} errors={} achieved_rps={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        args.rate,
        lat.len() as u64 + outcome.errors,
        lat.len(),
        outcome.errors,
        lat.len() as f64 / args.duration.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        lat.last().copied().unwrap_or(0),
    );
}

async fn run(args: &Args) -> Outcome {
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let mut tasks = Vec::new();
    for i in 0..args.connections {
        // Stagger the connections evenly over one interval.
        let first = start + Duration::from_secs_f64(i as f64 / args.rate);
        let (addr, users, counter) = (args.addr, args.users, counter.clone());
        tasks.push(tokio::spawn(connection(addr, first, interval, measure_from, end, users, counter)));
    }
    let mut total = Outcome::default();
    for t in tasks {
        let o = t.await.expect("connection task");
        total.latencies_us.extend(o.latencies_us);
        total.errors += o.errors;
    }
    total
}

async fn connection(
    addr: SocketAddr,
    first: Instant,
    interval: Duration,
    measure_from: Instant,
    end: Instant,
    users: u64,
    counter: Arc<AtomicU64>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut conn: Option<Conn> = None;
    let mut due = first;
    let mut request = Vec::with_capacity(128);
    while due < end {
        let now = Instant::now();
        // On time: our timer's lateness is not the server's fault. Behind
        // schedule (the last answer came late): the wait counts.
        let t0 = if now < due {
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        } else {
            due
        };
        let n = counter.fetch_add(1, Ordering::Relaxed) % users;
        request.clear();
        request.extend_from_slice(
            format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-User-ID: user-{n}\r\nUser-Agent: openloop\r\n\r\n").as_bytes(),
        );
        let result = async {
            if conn.is_none() {
                conn = Some(Conn::open(addr).await?);
            }
            conn.as_mut().unwrap().exchange(&request).await
        }
        .await;
        let measured = due >= measure_from;
        match result {
            Ok((status, keep)) => {
                if measured {
                    if (200..300).contains(&status) {
                        out.latencies_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        out.errors += 1;
                    }
                }
                if !keep {
                    conn = None;
                }
            }
            Err(_) => {
                if measured {
                    out.errors += 1;
                }
                conn = None;
            }
        }
        due += interval;
    }
    out
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(4096) })
    }

    /// Send one request, read one response (Content-Length bodies only).
    /// Returns the status and whether the connection may be reused.
    async fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, bool)> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.read_more().await? == 0 {
                return Err(bad("closed before the response head"));
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("head not UTF-8"))?;
        let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| bad("status line"))?;
        let (mut length, mut keep) = (None, true);
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                keep = false;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked responses are not supported"));
            }
        }
        let want = head_end + length.ok_or_else(|| bad("no content-length"))?;
        while self.buf.len() < want {
            if self.read_more().await? == 0 {
                return Err(bad("closed mid-body"));
            }
        }
        Ok((status, keep))
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        let len = self.buf.len();
        self.buf.resize(len + 4096, 0);
        let n = self.stream.read(&mut self.buf[len..]).await?;
        self.buf.truncate(len + n);
        Ok(n)
    }
}
