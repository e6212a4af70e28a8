//! The load generator: plain threads with blocking `std::net` sockets
//! (TCP_NODELAY on; connect, read and write timeouts, so a dead server
//! fails a point instead of hanging the bench). Every loop is bounded in
//! time and in count.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Size of a ping-pong or churn message.
pub const MESSAGE: usize = 64;
/// Size of one bulk write, as the host's read buffer.
pub const CHUNK: usize = 64 * 1024;
/// Untimed warm-up before a ping-pong or bulk point is measured.
const WARMUP: Duration = Duration::from_millis(300);
/// Longest a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Latency samples kept per ping-pong point (all connections together);
/// round trips beyond it are counted but not timed.
const MAX_SAMPLES: usize = 2_000_000;
/// Upper bound on iterations of any per-thread loop (time ends them first).
const MAX_ROUNDS: u64 = 100_000_000;
/// A churn client gives up after this many failed connections.
const MAX_CHURN_ERRORS: u64 = 100;

/// A client connection with the bench's settings.
pub fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .context("read timeout")?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .context("write timeout")?;
    Ok(stream)
}

/// Joins a worker thread, turning a panic into an error.
fn join<T>(worker: thread::JoinHandle<Result<T>>) -> Result<T> {
    worker
        .join()
        .map_err(|_| anyhow!("load generator thread panicked"))?
}

/// Ping-pong figures.
pub struct PingPong {
    /// Round trips per second, all connections together.
    pub rate: f64,
    /// Median round-trip time, µs.
    pub p50_us: f64,
    /// 99th percentile round-trip time, µs.
    pub p99_us: f64,
    /// Round trips including the warm-up's.
    pub all_rounds: u64,
}

/// `conns` connections, each sending a 64-byte message and waiting for its
/// echo, back to back, for `duration` after a warm-up.
pub fn pingpong(addr: SocketAddr, conns: usize, duration: Duration) -> Result<PingPong> {
    let barrier = Arc::new(Barrier::new(conns));
    let per_conn = (MAX_SAMPLES / conns).max(1);
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || -> Result<(u64, u64, Vec<u32>)> {
                let stream = connect(addr);
                // Everybody meets here, connected or not, so that nobody
                // waits for a thread that failed.
                barrier.wait();
                let mut stream = stream?;
                let (message, mut reply) = ([7u8; MESSAGE], [0u8; MESSAGE]);
                let measured_from = Instant::now() + WARMUP;
                let end = measured_from + duration;
                let mut samples = Vec::with_capacity(per_conn.min(1 << 16));
                let (mut rounds, mut all) = (0u64, 0u64);
                for _ in 0..MAX_ROUNDS {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    stream.write_all(&message).context("write")?;
                    stream.read_exact(&mut reply).context("read the echo")?;
                    all += 1;
                    if started >= measured_from {
                        rounds += 1;
                        if samples.len() < per_conn {
                            let nanos = started.elapsed().as_nanos();
                            samples.push(u32::try_from(nanos).unwrap_or(u32::MAX));
                        }
                    }
                }
                Ok((rounds, all, samples))
            })
        })
        .collect();
    let (mut rounds, mut all_rounds) = (0, 0);
    let mut samples = Vec::new();
    for worker in workers {
        let (n, all, s) = join(worker)?;
        rounds += n;
        all_rounds += all;
        samples.extend(s);
    }
    if samples.is_empty() {
        bail!("no round trip completed");
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let index = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
        f64::from(samples[index]) / 1e3
    };
    Ok(PingPong {
        rate: rounds as f64 / duration.as_secs_f64(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        all_rounds,
    })
}

/// One connection: a thread writes 64 KiB chunks while this one reads the
/// echo back; MB/s (10^6 bytes) read during `duration` after a warm-up.
pub fn bulk(addr: SocketAddr, duration: Duration) -> Result<f64> {
    let mut reader = connect(addr)?;
    let mut writer = reader.try_clone().context("clone the socket")?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let sender = thread::spawn(move || -> Result<()> {
        let chunk = vec![1u8; CHUNK];
        for _ in 0..MAX_ROUNDS {
            if stopped.load(Ordering::Relaxed) {
                break;
            }
            writer.write_all(&chunk).context("write")?;
        }
        writer.shutdown(Shutdown::Write).context("shutdown")?;
        Ok(())
    });
    let mut buf = vec![0u8; CHUNK];
    let measured_from = Instant::now() + WARMUP;
    let end = measured_from + duration;
    let mut received = 0usize;
    let measured = (|| -> Result<()> {
        for _ in 0..MAX_ROUNDS {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            let n = reader.read(&mut buf).context("read the echo")?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            if now >= measured_from {
                received += n;
            }
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    // Read what is still in flight so the sender's last write completes,
    // until the server closes after our shutdown (bounded).
    let drain_until = Instant::now() + IO_TIMEOUT;
    while Instant::now() < drain_until && reader.read(&mut buf).is_ok_and(|n| n > 0) {}
    let _ = reader.shutdown(Shutdown::Both);
    let sent = join(sender);
    measured?;
    sent?;
    Ok(received as f64 / duration.as_secs_f64() / 1e6)
}

/// Churn figures.
pub struct Churn {
    /// Completed connections per second.
    pub rate: f64,
    /// Failed connections (connect, write or read).
    pub errors: u64,
    /// The seconds `rate` is over.
    pub seconds: f64,
}

/// What a churn connection does between connect and close.
pub type Exchange = fn(&mut TcpStream) -> Result<()>;

/// One echo churn exchange: 64 bytes out, their echo back.
pub fn echo_once(stream: &mut TcpStream) -> Result<()> {
    let (message, mut reply) = ([7u8; MESSAGE], [0u8; MESSAGE]);
    stream.write_all(&message).context("write")?;
    stream.read_exact(&mut reply).context("read the echo")?;
    Ok(())
}

/// One exchange with the `counter` plugin, which answers at once and
/// closes: everything it sends, which must be a visit.
pub fn read_a_visit(stream: &mut TcpStream) -> Result<()> {
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).context("read the reply")?;
    if !reply.starts_with(b"visit ") {
        bail!("not a visit: {:?}", String::from_utf8_lossy(&reply));
    }
    Ok(())
}

/// `clients` threads, each repeatedly: connect, `exchange` (the echo
/// churn: [`echo_once`]), close; for `duration`.
pub fn churn_with(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    exchange: Exchange,
) -> Result<Churn> {
    let end = Instant::now() + duration;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            thread::spawn(move || -> Result<(u64, u64)> {
                let (mut done, mut errors) = (0u64, 0u64);
                for _ in 0..MAX_ROUNDS {
                    if Instant::now() >= end || errors >= MAX_CHURN_ERRORS {
                        break;
                    }
                    match connect(addr).and_then(|mut stream| exchange(&mut stream)) {
                        Ok(()) => done += 1,
                        Err(_) => errors += 1,
                    }
                }
                Ok((done, errors))
            })
        })
        .collect();
    let (mut done, mut errors) = (0, 0);
    for worker in workers {
        let (d, e) = join(worker)?;
        done += d;
        errors += e;
    }
    Ok(Churn {
        rate: done as f64 / duration.as_secs_f64(),
        errors,
        seconds: duration.as_secs_f64(),
    })
}

/// Connections opened and held by [`open_idle`].
pub struct Held {
    /// The open connections, in the order they were opened.
    pub streams: Vec<TcpStream>,
    /// Why opening stopped early, if it did.
    pub stopped: Option<String>,
    /// How long opening took.
    pub took: Duration,
}

/// Opens up to `count` connections to `addr` and keeps them, stopping at
/// the first failure or after `limit`.
pub fn open_idle(addr: SocketAddr, count: usize, limit: Duration) -> Held {
    let started = Instant::now();
    let mut streams = Vec::with_capacity(count);
    let mut stopped = None;
    while streams.len() < count {
        if started.elapsed() > limit {
            stopped = Some(format!("time limit of {limit:?} reached"));
            break;
        }
        match connect(addr) {
            Ok(stream) => streams.push(stream),
            Err(err) => {
                stopped = Some(format!("{err:#}"));
                break;
            }
        }
    }
    Held {
        streams,
        stopped,
        took: started.elapsed(),
    }
}

/// Sends one byte on each of `streams` and counts those whose echo arrives
/// within `limit` (waiting for all at once with poll(2)).
pub fn echo_check(streams: &[&TcpStream], limit: Duration) -> Result<usize> {
    let mut waiting: Vec<&TcpStream> = streams
        .iter()
        .copied()
        .filter(|stream| {
            let mut stream: &TcpStream = stream;
            stream.write_all(b"x").is_ok()
        })
        .collect();
    let deadline = Instant::now() + limit;
    let mut byte = [0u8; 1];
    let (mut answered, mut rounds) = (0, 0);
    while !waiting.is_empty() && rounds < 100_000 {
        rounds += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds: Vec<libc::pollfd> = waiting
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout_ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs that
        // outlives the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err).context("poll");
        }
        let mut still = Vec::with_capacity(waiting.len());
        for (mut stream, fd) in waiting.into_iter().zip(&fds) {
            if fd.revents == 0 {
                still.push(stream);
            } else {
                // Readable (or closed): this read does not block. A closed
                // or failed connection does not count.
                if stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    answered += 1;
                }
            }
        }
        waiting = still;
    }
    Ok(answered)
}
