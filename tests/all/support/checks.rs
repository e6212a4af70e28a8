//! The behaviour every build of the example plugins must show, whatever it
//! was compiled to or however it is served: checks shared by the WASM,
//! native and other-language tables.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use super::Host;

pub const GREETING: &str = "欢迎致电 10086,请输入1xxx,0转人工服务.";
pub const TRANSFER: &str = "通过可能会被录音.balabala一大推";
pub const ASK_AGAIN: &str = "请重新输入.";

/// echo: round trips, binary-safe, and a large payload written while read.
pub fn check_echo(host: &Host) {
    let mut stream = host.connect();
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    stream.write_all(&all_bytes).expect("send every byte value");
    let mut reply = vec![0; 256];
    stream
        .read_exact(&mut reply)
        .expect("echo of every byte value");
    assert_eq!(reply, all_bytes);

    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut writer = stream.try_clone().expect("clone the stream");
    let sent = payload.clone();
    let sender = std::thread::spawn(move || writer.write_all(&sent).expect("send 1 MB"));
    let mut echoed = vec![0; payload.len()];
    stream.read_exact(&mut echoed).expect("echo of 1 MB");
    sender.join().expect("the sending thread panicked");
    assert!(echoed == payload, "1 MB payload came back changed");
}

/// bot10086: greeting, transfer, ask again, several lines per packet, exit.
pub fn check_bot(host: &Host) {
    let stream = host.connect();
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut lines = BufReader::new(stream);
    let mut line = String::new();
    let mut next = |lines: &mut BufReader<_>| {
        line.clear();
        lines.read_line(&mut line).expect("a line from the bot");
        line.trim_end().to_string()
    };
    assert_eq!(next(&mut lines), GREETING);
    writer.write_all(b"0").expect("send 0");
    assert_eq!(next(&mut lines), TRANSFER);
    writer.write_all(b"hello\n").expect("send a line");
    assert_eq!(next(&mut lines), ASK_AGAIN);
    writer.write_all(b"1\n2\n").expect("send two lines");
    assert_eq!(next(&mut lines), ASK_AGAIN);
    assert_eq!(next(&mut lines), ASK_AGAIN);
    writer.write_all(b"exit\n").expect("send exit");
    let mut rest = Vec::new();
    lines
        .read_to_end(&mut rest)
        .expect("the bot hangs up after exit");
    assert!(rest.is_empty(), "unexpected bytes after exit: {rest:?}");
}

/// Reads one HTTP response (head + Content-Length body).
pub fn read_response(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .expect("read the status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("header line");
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("a numeric Content-Length"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("read the body");
    (status, headers, body)
}

/// http-hello: 200 with keep-alive, 404, pipelining, 400 on garbage.
pub fn check_http(host: &Host) {
    let stream = host.connect();
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    writer
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send two pipelined requests");
    let (status, _, body) = read_response(&mut reader);
    assert_eq!((status, body.as_slice()), (200, &b"Hello, World!"[..]));
    let (status, _, _) = read_response(&mut reader);
    assert_eq!(status, 404);
    writer
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send a third request");
    assert_eq!(read_response(&mut reader).0, 200, "keep-alive");

    let mut garbage = host.connect();
    garbage
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("set read timeout");
    garbage.write_all(b"ping\n").expect("send garbage");
    let mut reply = Vec::new();
    garbage
        .read_to_end(&mut reply)
        .expect("400 then close, at once");
    assert!(
        reply.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}
