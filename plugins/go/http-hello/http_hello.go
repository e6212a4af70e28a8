// The http-hello plugin in Go: a tiny HTTP/1.1 server, with the same rules
// as the Rust one (plugins/rust/http-hello):
//
//   - GET / and HEAD / -> 200 "Hello, World!" (HEAD without the body); other
//     paths -> 404; other methods -> 405 with "Allow: GET, HEAD". The query
//     string is ignored.
//   - Keep-alive and pipelining: every complete request in the buffer is
//     answered in order, the answers to one read in one write. HTTP/1.1
//     stays open unless "Connection: close"; HTTP/1.0 closes unless
//     "Connection: keep-alive".
//   - Content-Length bodies are discarded as they arrive; Transfer-Encoding
//     -> 501 and close.
//   - Bytes that cannot be HTTP -> 400 and close as soon as that is certain
//     ("ping\n" gets its 400 at once); a head over 8 KiB or with more than
//     64 headers -> 431 and close.
//   - Before closing, the server shuts down its write side and briefly
//     drains what the client still sends.
package export_wit_world

import (
	"bytes"
	"strconv"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	conns "wit_component/plughost_handler_connections"
)

const (
	chunk      = 64 * 1024
	maxHead    = 8 * 1024
	maxHeaders = 64
)

type outcome int

const (
	partial outcome = iota
	request
	badRequest
	headTooLarge
	notImplemented
)

type head struct {
	len       int
	method    string
	root      bool
	minor     byte
	keepAlive bool
	bodyLen   uint64
}

func isTchar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
		bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// skipEmptyLines returns the length of the leading "\r\n" / "\n" lines.
func skipEmptyLines(p []byte) int {
	i := 0
	for {
		switch {
		case bytes.HasPrefix(p[i:], []byte("\r\n")):
			i += 2
		case bytes.HasPrefix(p[i:], []byte("\n")):
			i++
		default:
			return i
		}
	}
}

// requestLinePlausible reports whether the first (possibly incomplete)
// line can still become `METHOD SP target SP HTTP/d.d`.
func requestLinePlausible(p []byte) bool {
	line := p[skipEmptyLines(p):]
	complete := false
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line, complete = line[:i], true
	}
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return true
	}
	m := 0
	for m < len(line) && isTchar(line[m]) {
		m++
	}
	if m == 0 {
		return false
	}
	if m == len(line) {
		return !complete
	}
	if line[m] != ' ' {
		return false
	}
	after := line[m+1:]
	t := 0
	for t < len(after) && after[t] > 0x20 && after[t] < 0x7f {
		t++
	}
	if t == len(after) {
		return !complete
	}
	if after[t] != ' ' || t == 0 {
		return false
	}
	version := after[t+1:]
	const pattern = "HTTP/D.D"
	if len(version) > len(pattern) || complete && len(version) != len(pattern) {
		return false
	}
	for i, c := range version {
		if pattern[i] == 'D' && !isDigit(c) || pattern[i] != 'D' && c != pattern[i] {
			return false
		}
	}
	return true
}

// parse classifies the request head at the start of p.
func parse(p []byte) (outcome, head) {
	var h head
	if !requestLinePlausible(p) {
		return badRequest, h
	}
	pos := skipEmptyLines(p)
	var lines [][]byte
	for {
		i := bytes.IndexByte(p[pos:], '\n')
		if i < 0 {
			if len(p) > maxHead {
				return headTooLarge, h
			}
			return partial, h
		}
		line := bytes.TrimSuffix(p[pos:pos+i], []byte("\r"))
		pos += i + 1
		if len(line) == 0 {
			break
		}
		if len(lines) == maxHeaders+1 {
			return headTooLarge, h
		}
		lines = append(lines, line)
	}
	if pos > maxHead {
		return headTooLarge, h
	}

	parts := bytes.SplitN(lines[0], []byte(" "), 3)
	if len(parts) != 3 {
		return badRequest, h
	}
	version := parts[2]
	if len(version) != 8 || !bytes.HasPrefix(version, []byte("HTTP/1.")) || version[7] != '0' && version[7] != '1' {
		return badRequest, h
	}
	h.method = string(parts[0])
	target := parts[1]
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	h.root = string(target) == "/"
	h.minor = version[7] - '0'

	closeConn, keepAlive, haveLength := false, false, false
	for _, line := range lines[1:] {
		n := 0
		for n < len(line) && isTchar(line[n]) {
			n++
		}
		if n == 0 || n == len(line) || line[n] != ':' {
			return badRequest, h
		}
		name := string(bytes.ToLower(line[:n]))
		value := bytes.Trim(line[n+1:], " \t")
		switch name {
		case "connection":
			for _, token := range bytes.Split(value, []byte(",")) {
				token = bytes.ToLower(bytes.Trim(token, " \t"))
				closeConn = closeConn || string(token) == "close"
				keepAlive = keepAlive || string(token) == "keep-alive"
			}
		case "transfer-encoding":
			return notImplemented, h
		case "content-length":
			if len(value) == 0 {
				return badRequest, h
			}
			for _, c := range value {
				if !isDigit(c) {
					return badRequest, h
				}
			}
			v, err := strconv.ParseUint(string(value), 10, 64)
			if err != nil || haveLength && v != h.bodyLen {
				return badRequest, h
			}
			haveLength, h.bodyLen = true, v
		}
	}
	h.len = pos
	h.keepAlive = !closeConn && (h.minor >= 1 || keepAlive)
	return request, h
}

func writeResponse(out *bytes.Buffer, status, extra, body string, sendBody bool) {
	out.WriteString("HTTP/1.1 " + status + "\r\nServer: plughost-http-hello\r\nContent-Type: text/plain\r\n")
	out.WriteString(extra)
	out.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	if sendBody {
		out.WriteString(body)
	}
}

func respond(h head, out *bytes.Buffer) {
	connection := ""
	switch {
	case !h.keepAlive:
		connection = "Connection: close\r\n"
	case h.minor == 0:
		connection = "Connection: keep-alive\r\n"
	}
	switch {
	case h.method != "GET" && h.method != "HEAD":
		writeResponse(out, "405 Method Not Allowed", "Allow: GET, HEAD\r\n"+connection, "Method Not Allowed\n", true)
	case h.root:
		writeResponse(out, "200 OK", connection, "Hello, World!", h.method != "HEAD")
	default:
		writeResponse(out, "404 Not Found", connection, "Not Found\n", h.method != "HEAD")
	}
}

func reject(why outcome, out *bytes.Buffer) {
	const closeConn = "Connection: close\r\n"
	switch why {
	case headTooLarge:
		writeResponse(out, "431 Request Header Fields Too Large", closeConn, "Request Header Fields Too Large\n", true)
	case notImplemented:
		writeResponse(out, "501 Not Implemented", closeConn, "Transfer-Encoding not supported\n", true)
	default:
		writeResponse(out, "400 Bad Request", closeConn, "Bad Request\n", true)
	}
}

// skip skips up to *discard body bytes of buf from start; returns the new
// start.
func skip(buf []byte, start int, discard *uint64) int {
	n := uint64(len(buf) - start)
	if n > *discard {
		n = *discard
	}
	*discard -= n
	return start + int(n)
}

// linger ends our side, then reads and drops what the client still sends
// (bounded), so its last response is not destroyed by a reset.
func linger(conn *conns.Connection) {
	if conn.Shutdown(conns.ShutdownHow_Write).IsErr() {
		return
	}
	conn.SetTimeout(witTypes.Some[uint64](250))
	budget := 256 * 1024
	for i := 0; i < 8; i++ {
		data, err := Read(conn, uint32(min(budget, chunk)))
		if err != nil || len(data) == 0 || len(data) >= budget {
			return
		}
		budget -= len(data)
	}
}

func serve(conn *conns.Connection) Result {
	var buf []byte
	var discard uint64
	for {
		start := skip(buf, 0, &discard)
		var out bytes.Buffer
		closeConn := false
		for discard == 0 && start < len(buf) {
			o, h := parse(buf[start:])
			if o == partial {
				break
			}
			if o != request {
				reject(o, &out)
				closeConn = true
				break
			}
			respond(h, &out)
			start += h.len
			discard = h.bodyLen
			start = skip(buf, start, &discard)
			if !h.keepAlive {
				closeConn = true
				break
			}
		}
		buf = append(buf[:0], buf[start:]...)
		if out.Len() > 0 {
			if err := WriteAll(conn, out.Bytes()); err != nil {
				return Err("write: " + ErrorName(*err))
			}
		}
		if closeConn {
			linger(conn)
			return Ok()
		}
		data, err := Read(conn, chunk)
		if err != nil {
			switch *err {
			case conns.ErrorCode_Reset, conns.ErrorCode_Closed, conns.ErrorCode_BrokenPipe:
				return Ok() // the client went away: nothing left to answer
			}
			return Err("read: " + ErrorName(*err))
		}
		if len(data) == 0 {
			return Ok()
		}
		buf = append(buf, data...)
	}
}

func Setup(conn *conns.Connection) Result {
	defer conn.Drop()
	return Ok()
}

func Handle(conn *conns.Connection) Result {
	defer conn.Drop()
	return serve(conn)
}

func Finish(conn *conns.Connection) {
	conn.Drop()
}
