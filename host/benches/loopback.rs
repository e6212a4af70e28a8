//! Loopback benchmark: the host serving WASM (and native) plugins against a
//! plain native thread-per-connection server, in the same run, reported as
//! ratios (reference = 1.00).
//!
//! `cargo bench -p host --bench loopback` (env: `BENCH_SECS`, default 3;
//! `BENCH_ONLY=pingpong,bulk,churn,http,idle`; `BENCH_IDLE_CONNS`, default
//! 10000). Every server runs in its own process pinned to CPU 0 and every
//! load generator on CPU 1: on these 2-core VMs a wake-up across cores costs
//! far more than one on the same core, so unpinned figures mostly measure
//! where the scheduler happened to put the threads. Nothing is asserted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;
const BUFFER: usize = 64 * 1024;
const HELLO: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(kind) = args
        .iter()
        .position(|a| a == "--reference-server")
        .map(|i| &args[i + 1])
    {
        return reference_server(kind);
    }
    print_machine();
    pin_to(CLIENT_CPU);
    let secs: u64 = env_or("BENCH_SECS", 3);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let native_echo = root.join("target/plugins/libecho.so");
    let native_http = root.join("target/plugins/libhttp_hello.so");
    let duration = Duration::from_secs(secs);

    if run("pingpong") || run("bulk") || run("churn") {
        let targets = [
            Server::reference("echo")?,
            Server::host("host, wasm echo", &["--plugin", "echo"])?,
            Server::host(
                "host, wasm echo, no CPU deadline",
                &["--plugin", "echo", "--call-timeout", "0"],
            )?,
            Server::host(
                "host, native echo",
                &["--plugin", native_echo.to_str().unwrap()],
            )?,
        ];
        if run("pingpong") {
            for conns in [1, 50] {
                table(
                    &format!("echo ping-pong, 64 B, {conns} connection(s)"),
                    "round trips/s",
                    &targets,
                    |addr| pingpong(addr, conns, duration),
                )?;
            }
        }
        if run("bulk") {
            table(
                "bulk echo, 64 KiB writes, 1 connection",
                "MB/s",
                &targets,
                |addr| bulk(addr, duration),
            )?;
        }
        if run("churn") {
            table(
                "connection churn (connect, 64 B echo, close), 4 clients",
                "connections/s",
                &targets,
                |addr| churn(addr, 4, duration),
            )?;
        }
    }
    if run("http") {
        http(&native_http, secs)?;
    }
    if run("idle") {
        idle(env_or("BENCH_IDLE_CONNS", 10_000))?;
    }
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pins the calling thread (and threads it spawns later) to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read
    // and write that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(str::to_string)
        })
        .and_then(|l| l.split(':').nth(1).map(|m| m.trim().to_string()))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} CPUs, {cpu}, Linux {}", kernel.trim());
    println!("servers pinned to CPU {SERVER_CPU}, load generators to CPU {CLIENT_CPU}\n");
}

/// A server process under test.
struct Server {
    name: String,
    addr: SocketAddr,
    child: Child,
}

impl Server {
    /// This bench binary, re-run as the native reference server.
    fn reference(kind: &str) -> Result<Server> {
        let exe = std::env::current_exe()?;
        let mut child = pinned(exe.to_str().unwrap())
            .args(["--reference-server", kind])
            .stdout(Stdio::piped())
            .spawn()
            .context("start the reference server")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        let addr = line.trim().parse().context("reference server address")?;
        Ok(Server {
            name: format!("native reference ({kind})"),
            addr,
            child,
        })
    }

    /// The real `host` binary with `args`.
    fn host(name: &str, args: &[&str]) -> Result<Server> {
        let mut child = pinned(env!("CARGO_BIN_EXE_host"))
            .args(["run", "--port", "0"])
            .args(args)
            .env("RUST_LOG", "warn,host::server=info")
            .stderr(Stdio::piped())
            .spawn()
            .context("start host")?;
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().context("host exited before listening")??;
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap_or_default().parse()?;
            }
        };
        // Keep draining the log so the host never blocks on a full pipe.
        thread::spawn(move || lines.for_each(drop));
        Ok(Server {
            name: name.to_string(),
            addr,
            child,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pinned(program: &str) -> Command {
    let mut command = Command::new("taskset");
    command.args(["-c", &SERVER_CPU.to_string(), program]);
    command
}

/// Runs `measure` against every target and prints figures and ratios to
/// the first (the reference).
fn table(
    title: &str,
    unit: &str,
    targets: &[Server],
    measure: impl Fn(SocketAddr) -> Result<Figure>,
) -> Result<()> {
    println!("{title}");
    let mut reference = None;
    for target in targets {
        let figure = measure(target.addr)?;
        let base = *reference.get_or_insert(figure.value);
        println!(
            "  {:<36} {:>12.0} {unit:<14} ratio {:>5.2}{}",
            target.name,
            figure.value,
            figure.value / base,
            figure.latency.map_or(String::new(), |(p50, p99)| format!(
                "   p50 {p50:>6.1} µs  p99 {p99:>7.1} µs"
            ))
        );
    }
    println!();
    Ok(())
}

struct Figure {
    value: f64,
    latency: Option<(f64, f64)>,
}

fn client(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

fn pingpong(addr: SocketAddr, conns: usize, duration: Duration) -> Result<Figure> {
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            thread::spawn(move || -> Result<Vec<Duration>> {
                let mut stream = client(addr)?;
                let (message, mut reply) = ([7u8; 64], [0u8; 64]);
                let mut samples = Vec::new();
                while Instant::now() < deadline && samples.len() < 5_000_000 {
                    let started = Instant::now();
                    stream.write_all(&message)?;
                    stream.read_exact(&mut reply)?;
                    samples.push(started.elapsed());
                }
                Ok(samples)
            })
        })
        .collect();
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("client panicked"))??,
        );
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Ok(Figure {
        value: samples.len() as f64 / duration.as_secs_f64(),
        latency: Some((at(0.5).as_secs_f64() * 1e6, at(0.99).as_secs_f64() * 1e6)),
    })
}

fn bulk(addr: SocketAddr, duration: Duration) -> Result<Figure> {
    let stream = client(addr)?;
    let mut writer = stream.try_clone()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let sender = thread::spawn(move || {
        let chunk = vec![1u8; BUFFER];
        while !stopped.load(Ordering::Relaxed) {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut reader = stream;
    let mut buf = vec![0u8; BUFFER];
    let started = Instant::now();
    let mut received = 0usize;
    while started.elapsed() < duration {
        received += reader.read(&mut buf)?;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    // Drain what is in flight so the sender's last write completes.
    while reader.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
    let _ = sender.join();
    Ok(Figure {
        value: received as f64 / elapsed.as_secs_f64() / 1e6,
        latency: None,
    })
}

fn churn(addr: SocketAddr, clients: usize, duration: Duration) -> Result<Figure> {
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            thread::spawn(move || -> Result<u64> {
                let (message, mut reply) = ([7u8; 64], [0u8; 64]);
                let mut done = 0;
                while Instant::now() < deadline {
                    let mut stream = client(addr)?;
                    stream.write_all(&message)?;
                    stream.read_exact(&mut reply)?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker
            .join()
            .map_err(|_| anyhow::anyhow!("client panicked"))??;
    }
    Ok(Figure {
        value: total as f64 / duration.as_secs_f64(),
        latency: None,
    })
}

/// HTTP keep-alive with wrk: reference, host wasm, host native, nginx.
fn http(native_http: &std::path::Path, secs: u64) -> Result<()> {
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("http: wrk is not installed (apt-get install -y wrk); skipped\n");
        return Ok(());
    }
    let mut targets = vec![
        Server::reference("http")?,
        Server::host("host, wasm http-hello", &["--plugin", "http-hello"])?,
        Server::host(
            "host, native http-hello",
            &["--plugin", native_http.to_str().unwrap()],
        )?,
    ];
    let nginx = Nginx::start();
    println!("HTTP hello keep-alive, wrk -t1 -c50 (only 2xx count)");
    let mut reference = None;
    let mut nginx_rps = None;
    if let Some(nginx) = &nginx {
        nginx_rps = Some(wrk(nginx.addr, secs)?);
    }
    for target in targets.drain(..) {
        let rps = wrk(target.addr, secs)?;
        let base = *reference.get_or_insert(rps);
        let vs_nginx = nginx_rps.map_or(String::new(), |n| format!("   vs nginx {:>5.2}", rps / n));
        println!(
            "  {:<36} {rps:>12.0} requests/s    ratio {:>5.2}{vs_nginx}",
            target.name,
            rps / base
        );
    }
    match nginx_rps {
        Some(n) => println!("  {:<36} {n:>12.0} requests/s", "nginx (1 worker)"),
        None => println!("  nginx: not installed (apt-get install -y nginx); skipped"),
    }
    println!();
    Ok(())
}

/// Requests/s that got a 2xx answer.
fn wrk(addr: SocketAddr, secs: u64) -> Result<f64> {
    let out = Command::new("taskset")
        .args(["-c", &CLIENT_CPU.to_string(), "wrk", "-t1", "-c50"])
        .arg(format!("-d{secs}s"))
        .arg(format!("http://{addr}/"))
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let number = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let Some(total) = number("Requests/sec:") else {
        bail!("wrk printed no result:\n{text}");
    };
    let requests = text
        .lines()
        .find_map(|l| {
            l.split(" requests in ")
                .next()
                .and_then(|n| n.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let non_2xx = number("Non-2xx or 3xx responses:").unwrap_or(0.0);
    Ok(if requests > 0.0 {
        total * (requests - non_2xx) / requests
    } else {
        total
    })
}

/// An nginx returning the same body, in a scratch directory.
struct Nginx {
    addr: SocketAddr,
    child: Child,
}

impl Nginx {
    fn start() -> Option<Nginx> {
        Command::new("nginx").arg("-v").output().ok()?;
        let dir = std::env::temp_dir().join(format!("plughost-bench-nginx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; error_log {d}/error.log; pid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; location = / {{ default_type text/plain; return 200 \"Hello, World!\"; }} }} }}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).ok()?;
        let child = pinned("nginx")
            .args(["-p", dir.to_str()?, "-c", dir.join("nginx.conf").to_str()?])
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
        Some(Nginx { addr, child })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Host RSS holding `count` idle echo connections, and whether a sample
/// still echoes afterwards.
fn idle(count: usize) -> Result<()> {
    raise_fd_limit(count as u64 * 2 + 1024);
    let host = Server::host("host, wasm echo", &["--plugin", "echo"])?;
    let before = rss_kib(host.pid())?;
    let mut streams = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        match client(host.addr) {
            Ok(stream) => streams.push(stream),
            Err(err) => {
                println!("  stopped opening connections at {}: {err}", streams.len());
                break;
            }
        }
    }
    // Make sure every connection is being served by an instance.
    let mut served = 0;
    for stream in &mut streams {
        if stream.write_all(b"x").is_ok() && stream.read_exact(&mut [0u8; 1]).is_ok() {
            served += 1;
        }
    }
    let during = rss_kib(host.pid())?;
    let step = (streams.len() / 100).max(1);
    let still = streams
        .iter_mut()
        .step_by(step)
        .take(100)
        .filter(|s| (&**s).write_all(b"y").is_ok() && (&**s).read_exact(&mut [0u8; 1]).is_ok())
        .count();
    println!("idle connections, wasm echo");
    println!(
        "  opened {} ({served} answered) in {:.1} s; host RSS {:.0} MiB before, {:.0} MiB holding them \
         ({:.0} KiB per connection); {still}/100 sampled still echo",
        streams.len(),
        started.elapsed().as_secs_f64(),
        before as f64 / 1024.0,
        during as f64 / 1024.0,
        (during - before) as f64 / streams.len().max(1) as f64
    );
    println!();
    Ok(())
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn raise_fd_limit(wanted: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the local struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The native reference: a thread per connection, TCP_NODELAY, 64 KiB
/// reads — what the host does, minus the plugin layer.
fn reference_server(kind: &str) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let http = kind == "http";
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        stream.set_nodelay(true)?;
        thread::spawn(move || {
            let mut buf = vec![0u8; BUFFER];
            let mut pending = Vec::new();
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if !http {
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    continue;
                }
                pending.extend_from_slice(&buf[..n]);
                let mut answers = Vec::new();
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    pending.drain(..end + 4);
                    answers.extend_from_slice(HELLO);
                }
                if stream.write_all(&answers).is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}
