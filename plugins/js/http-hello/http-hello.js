// The http-hello plugin in JavaScript: a tiny HTTP/1.1 server, with the same
// rules as the Rust one (plugins/rust/http-hello):
//
// - GET / and HEAD / -> 200 "Hello, World!" (HEAD without the body); other
//   paths -> 404; other methods -> 405 with "Allow: GET, HEAD". The query
//   string is ignored.
// - Keep-alive and pipelining: every complete request in the buffer is
//   answered in order, the answers to one read in one write. HTTP/1.1 stays
//   open unless "Connection: close"; HTTP/1.0 closes unless
//   "Connection: keep-alive".
// - Content-Length bodies are discarded as they arrive; Transfer-Encoding
//   -> 501 and close.
// - Bytes that cannot be HTTP -> 400 and close as soon as that is certain
//   ("ping\n" gets its 400 at once); a head over 8 KiB or with more than 64
//   headers -> 431 and close.
// - Before closing, the server shuts down its write side and briefly drains
//   what the client still sends.
//
// The request bytes are handled as a "binary" string (one char per byte).

const CHUNK = 64 * 1024;
const MAX_HEAD = 8 * 1024;
const MAX_HEADERS = 64;

const PARTIAL = "partial";
const BAD_REQUEST = "bad-request";
const HEAD_TOO_LARGE = "head-too-large";
const NOT_IMPLEMENTED = "not-implemented";

const LEADING_EMPTY_LINES = /^(?:\r\n|\n)*/;
const METHOD = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/;
const TARGET = /^[\x21-\x7e]+/;
const HEADER = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):(.*)$/s;

function fail(what, e) {
  return { payload: `${what}: ${e?.payload ?? e}` };
}

/** Bytes to a string with one char per byte. */
function binary(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
  }
  return s;
}

/** An ASCII string to bytes. */
function ascii(s) {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** Whether the first (possibly incomplete) line can still become
 * `METHOD SP target SP HTTP/d.d`. */
function requestLinePlausible(buf) {
  const rest = buf.slice(buf.match(LEADING_EMPTY_LINES)[0].length);
  const newline = rest.indexOf("\n");
  const complete = newline >= 0;
  let line = complete ? rest.slice(0, newline) : rest;
  if (line.endsWith("\r")) line = line.slice(0, -1);
  if (line.length === 0) return true;
  const m = line.match(METHOD);
  if (!m) return false;
  const mlen = m[0].length;
  if (mlen === line.length) return !complete;
  if (line[mlen] !== " ") return false;
  const after = line.slice(mlen + 1);
  const t = after.match(TARGET);
  const tlen = t ? t[0].length : 0;
  if (tlen === after.length) return !complete;
  if (after[tlen] !== " " || tlen === 0) return false;
  const version = after.slice(tlen + 1);
  const pattern = "HTTP/D.D";
  if (version.length > pattern.length || (complete && version.length !== pattern.length)) {
    return false;
  }
  for (let i = 0; i < version.length; i++) {
    const ok = pattern[i] === "D" ? version[i] >= "0" && version[i] <= "9" : version[i] === pattern[i];
    if (!ok) return false;
  }
  return true;
}

/** Classifies the request head at the start of buf: a head object,
 * PARTIAL, or an error outcome. */
function parse(buf) {
  if (!requestLinePlausible(buf)) return BAD_REQUEST;
  let pos = buf.match(LEADING_EMPTY_LINES)[0].length;
  const lines = [];
  for (;;) {
    const newline = buf.indexOf("\n", pos);
    if (newline < 0) return buf.length > MAX_HEAD ? HEAD_TOO_LARGE : PARTIAL;
    let line = buf.slice(pos, newline);
    pos = newline + 1;
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (line.length === 0) break;
    if (lines.length === MAX_HEADERS + 1) return HEAD_TOO_LARGE;
    lines.push(line);
  }
  if (pos > MAX_HEAD) return HEAD_TOO_LARGE;

  const first = lines[0];
  const sp1 = first.indexOf(" ");
  const sp2 = sp1 < 0 ? -1 : first.indexOf(" ", sp1 + 1);
  if (sp2 < 0) return BAD_REQUEST;
  const method = first.slice(0, sp1);
  const target = first.slice(sp1 + 1, sp2);
  const version = first.slice(sp2 + 1);
  if (version !== "HTTP/1.0" && version !== "HTTP/1.1") return BAD_REQUEST;
  const minor = version === "HTTP/1.1" ? 1 : 0;

  let close = false;
  let keepAlive = false;
  let bodyLen = null;
  for (const line of lines.slice(1)) {
    const m = line.match(HEADER);
    if (!m) return BAD_REQUEST;
    const name = m[1].toLowerCase();
    const value = m[2].replace(/^[ \t]+|[ \t]+$/g, "");
    if (name === "connection") {
      for (let token of value.split(",")) {
        token = token.replace(/^[ \t]+|[ \t]+$/g, "").toLowerCase();
        close ||= token === "close";
        keepAlive ||= token === "keep-alive";
      }
    } else if (name === "transfer-encoding") {
      return NOT_IMPLEMENTED;
    } else if (name === "content-length") {
      if (!/^[0-9]{1,19}$/.test(value)) return BAD_REQUEST;
      const n = Number(value);
      if (bodyLen !== null && bodyLen !== n) return BAD_REQUEST;
      bodyLen = n;
    }
  }
  return {
    length: pos,
    method,
    path: target.split("?")[0],
    minor,
    keepAlive: !close && (minor >= 1 || keepAlive),
    bodyLen: bodyLen ?? 0,
  };
}

function response(status, headers, body, sendBody = true) {
  return (
    `HTTP/1.1 ${status}\r\nServer: plughost-http-hello\r\nContent-Type: text/plain\r\n` +
    `${headers}Content-Length: ${body.length}\r\n\r\n` +
    (sendBody ? body : "")
  );
}

function respond(head) {
  const connection = !head.keepAlive
    ? "Connection: close\r\n"
    : head.minor === 0
      ? "Connection: keep-alive\r\n"
      : "";
  if (head.method !== "GET" && head.method !== "HEAD") {
    return response("405 Method Not Allowed", "Allow: GET, HEAD\r\n" + connection, "Method Not Allowed\n");
  }
  const sendBody = head.method !== "HEAD";
  if (head.path === "/") return response("200 OK", connection, "Hello, World!", sendBody);
  return response("404 Not Found", connection, "Not Found\n", sendBody);
}

function reject(why) {
  const close = "Connection: close\r\n";
  if (why === HEAD_TOO_LARGE) {
    return response("431 Request Header Fields Too Large", close, "Request Header Fields Too Large\n");
  }
  if (why === NOT_IMPLEMENTED) {
    return response("501 Not Implemented", close, "Transfer-Encoding not supported\n");
  }
  return response("400 Bad Request", close, "Bad Request\n");
}

/** Ends our side, then reads and drops what the client still sends
 * (bounded), so its last response is not destroyed by a reset. */
function linger(conn) {
  try {
    conn.shutdown("write");
  } catch {
    return;
  }
  conn.setTimeout(250n);
  let budget = 256 * 1024;
  for (let i = 0; i < 8; i++) {
    let data;
    try {
      data = conn.read(Math.min(CHUNK, budget));
    } catch {
      return;
    }
    if (data.length === 0 || data.length >= budget) return;
    budget -= data.length;
  }
}

export function setup(conn) {}

export function handle(conn) {
  let buf = "";
  let discard = 0; // body bytes still to be skipped
  for (;;) {
    let skipped = Math.min(buf.length, discard);
    discard -= skipped;
    let start = skipped;
    let out = "";
    let close = false;
    while (discard === 0 && start < buf.length) {
      const head = parse(buf.slice(start));
      if (head === PARTIAL) break;
      if (typeof head === "string") {
        out += reject(head);
        close = true;
        break;
      }
      out += respond(head);
      start += head.length;
      skipped = Math.min(buf.length - start, head.bodyLen);
      discard = head.bodyLen - skipped;
      start += skipped;
      if (!head.keepAlive) {
        close = true;
        break;
      }
    }
    buf = buf.slice(start);
    if (out.length > 0) {
      try {
        conn.write(ascii(out));
      } catch (e) {
        throw fail("write", e);
      }
    }
    if (close) {
      linger(conn);
      return;
    }
    let data;
    try {
      data = conn.read(CHUNK);
    } catch (e) {
      // the client went away: nothing left to answer
      if (["reset", "closed", "broken-pipe"].includes(e?.payload)) return;
      throw fail("read", e);
    }
    if (data.length === 0) return;
    buf += binary(data);
  }
}

export function finish(conn) {}
