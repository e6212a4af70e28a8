"""The http-hello plugin in Python: a tiny HTTP/1.1 server, with the same
rules as the Rust one (plugins/rust/http-hello):

* GET / and HEAD / -> 200 "Hello, World!" (HEAD without the body); other
  paths -> 404; other methods -> 405 with "Allow: GET, HEAD". The query
  string is ignored.
* Keep-alive and pipelining: every complete request in the buffer is
  answered in order, the answers to one read in one write. HTTP/1.1 stays
  open unless "Connection: close"; HTTP/1.0 closes unless
  "Connection: keep-alive".
* Content-Length bodies are discarded as they arrive; Transfer-Encoding ->
  501 and close.
* Bytes that cannot be HTTP -> 400 and close as soon as that is certain
  ("ping\\n" gets its 400 at once); a head over 8 KiB or with more than 64
  headers -> 431 and close.
* Before closing, the server shuts down its write side and briefly drains
  what the client still sends.
"""

# Imported here so that componentize-py's build-time snapshot holds it:
# the first connection handle dropped runs `weakref.finalize`, which
# imports `atexit` on first use, and without this every connection's
# fresh instance would pay that import (about 0.15 ms of CPU and 300 KiB).
import atexit  # noqa: F401

import re
from dataclasses import dataclass

import wit_world
from componentize_py_types import Err
from wit_world.imports.connections import Connection, ErrorCode, ShutdownHow

CHUNK = 64 * 1024
MAX_HEAD = 8 * 1024
MAX_HEADERS = 64

PARTIAL, BAD_REQUEST, HEAD_TOO_LARGE, NOT_IMPLEMENTED = range(4)

TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
LEADING_EMPTY_LINES = re.compile(rb"(?:\r\n|\n)*")
# A complete request line, and prefixes of one that may still complete.
METHOD = re.compile(TCHAR + rb"+")
TARGET = re.compile(rb"[\x21-\x7e]+")
HEADER = re.compile(rb"(" + TCHAR + rb"+):(.*)")


def error_name(code: ErrorCode) -> str:
    return code.name.lower().replace("_", "-")


@dataclass
class Head:
    length: int
    method: bytes
    path: bytes
    minor: int
    keep_alive: bool
    body_len: int


def request_line_plausible(buf: bytes) -> bool:
    """Whether the first (possibly incomplete) line can still become
    `METHOD SP target SP HTTP/d.d`."""
    rest = buf[LEADING_EMPTY_LINES.match(buf).end():]
    newline = rest.find(b"\n")
    complete = newline >= 0
    line = rest[:newline] if complete else rest
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line:
        return True
    m = METHOD.match(line)
    if not m:
        return False
    if m.end() == len(line):
        return not complete
    if line[m.end():m.end() + 1] != b" ":
        return False
    after = line[m.end() + 1:]
    t = TARGET.match(after)
    target_len = t.end() if t else 0
    if target_len == len(after):
        return not complete
    if after[target_len:target_len + 1] != b" " or target_len == 0:
        return False
    version = after[target_len + 1:]
    pattern = b"HTTP/D.D"
    if len(version) > len(pattern) or (complete and len(version) != len(pattern)):
        return False
    for got, want in zip(version, pattern):
        if want == ord("D"):
            if not 0x30 <= got <= 0x39:
                return False
        elif got != want:
            return False
    return True


def parse(buf: bytes):
    """Classifies the request head at the start of buf: a Head, PARTIAL,
    or an error outcome."""
    if not request_line_plausible(buf):
        return BAD_REQUEST
    pos = LEADING_EMPTY_LINES.match(buf).end()
    lines = []
    while True:
        newline = buf.find(b"\n", pos)
        if newline < 0:
            return HEAD_TOO_LARGE if len(buf) > MAX_HEAD else PARTIAL
        line = buf[pos:newline]
        pos = newline + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            break
        if len(lines) == MAX_HEADERS + 1:
            return HEAD_TOO_LARGE
        lines.append(line)
    if pos > MAX_HEAD:
        return HEAD_TOO_LARGE

    parts = lines[0].split(b" ", 2)
    if len(parts) != 3:
        return BAD_REQUEST
    method, target, version = parts
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        return BAD_REQUEST
    minor = version[-1] - 0x30

    close = keep_alive = False
    body_len = None
    for line in lines[1:]:
        m = HEADER.fullmatch(line)
        if not m:
            return BAD_REQUEST
        name = m.group(1).lower()
        value = m.group(2).strip(b" \t")
        if name == b"connection":
            for token in value.split(b","):
                token = token.strip(b" \t").lower()
                close |= token == b"close"
                keep_alive |= token == b"keep-alive"
        elif name == b"transfer-encoding":
            return NOT_IMPLEMENTED
        elif name == b"content-length":
            if not value or not value.isdigit() or len(value) > 19:
                return BAD_REQUEST
            n = int(value)
            if body_len is not None and body_len != n:
                return BAD_REQUEST
            body_len = n
    return Head(
        length=pos,
        method=method,
        path=target.split(b"?", 1)[0],
        minor=minor,
        keep_alive=not close and (minor >= 1 or keep_alive),
        body_len=body_len or 0,
    )


def response(status: str, headers: str, body: bytes, send_body: bool = True) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nServer: plughost-http-hello\r\n"
        f"Content-Type: text/plain\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + (body if send_body else b"")


def respond(head: Head) -> bytes:
    if not head.keep_alive:
        connection = "Connection: close\r\n"
    elif head.minor == 0:
        connection = "Connection: keep-alive\r\n"
    else:
        connection = ""
    if head.method not in (b"GET", b"HEAD"):
        return response(
            "405 Method Not Allowed", "Allow: GET, HEAD\r\n" + connection, b"Method Not Allowed\n"
        )
    send_body = head.method != b"HEAD"
    if head.path == b"/":
        return response("200 OK", connection, b"Hello, World!", send_body)
    return response("404 Not Found", connection, b"Not Found\n", send_body)


def reject(why: int) -> bytes:
    close = "Connection: close\r\n"
    if why == HEAD_TOO_LARGE:
        return response(
            "431 Request Header Fields Too Large", close, b"Request Header Fields Too Large\n"
        )
    if why == NOT_IMPLEMENTED:
        return response("501 Not Implemented", close, b"Transfer-Encoding not supported\n")
    return response("400 Bad Request", close, b"Bad Request\n")


def linger(conn: Connection) -> None:
    """Ends our side, then reads and drops what the client still sends
    (bounded), so its last response is not destroyed by a reset."""
    try:
        conn.shutdown(ShutdownHow.WRITE)
    except Err:
        return
    conn.set_timeout(250)
    budget = 256 * 1024
    for _ in range(8):
        try:
            data = conn.read(min(CHUNK, budget))
        except Err:
            return
        if not data or len(data) >= budget:
            return
        budget -= len(data)


class WitWorld(wit_world.WitWorld):
    def setup(self, conn: Connection) -> None:
        pass

    def handle(self, conn: Connection) -> None:
        buf = b""
        discard = 0  # body bytes still to be skipped
        while True:
            skipped = min(len(buf), discard)
            discard -= skipped
            start = skipped
            out = []
            close = False
            while discard == 0 and start < len(buf):
                head = parse(buf[start:])
                if head == PARTIAL:
                    break
                if not isinstance(head, Head):
                    out.append(reject(head))
                    close = True
                    break
                out.append(respond(head))
                start += head.length
                skipped = min(len(buf) - start, head.body_len)
                discard = head.body_len - skipped
                start += skipped
                if not head.keep_alive:
                    close = True
                    break
            buf = buf[start:]
            if out:
                try:
                    conn.write(b"".join(out))
                except Err as e:
                    raise Err(f"write: {error_name(e.value)}")
            if close:
                linger(conn)
                return
            try:
                data = conn.read(CHUNK)
            except Err as e:
                if e.value in (ErrorCode.RESET, ErrorCode.CLOSED, ErrorCode.BROKEN_PIPE):
                    return  # the client went away: nothing left to answer
                raise Err(f"read: {error_name(e.value)}")
            if not data:
                return
            buf += data

    def finish(self, conn: Connection) -> None:
        pass
