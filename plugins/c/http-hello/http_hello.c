/*
 * The http-hello plugin in C: a tiny HTTP/1.1 server, with the same rules
 * as the Rust one (plugins/rust/http-hello):
 *
 * - GET / and HEAD / -> 200 "Hello, World!" (HEAD without the body); other
 *   paths -> 404; other methods -> 405 with "Allow: GET, HEAD". The query
 *   string is ignored.
 * - Keep-alive and pipelining: every complete request in the buffer is
 *   answered in order, the answers to one read in one write. HTTP/1.1
 *   stays open unless "Connection: close"; HTTP/1.0 closes unless
 *   "Connection: keep-alive".
 * - Content-Length bodies are discarded as they arrive; Transfer-Encoding
 *   -> 501 and close.
 * - Bytes that cannot be HTTP -> 400 and close as soon as that is certain
 *   ("ping\n" gets its 400 at once); a head over 8 KiB or with more than
 *   64 headers -> 431 and close.
 * - Before closing, the server shuts down its write side and briefly
 *   drains what the client still sends.
 */
#include <stdlib.h>

#include "plughost.h"

#define CHUNK (64 * 1024)
#define MAX_HEAD (8 * 1024)
#define MAX_HEADERS 64

/* A growable byte buffer. */
typedef struct {
    uint8_t *ptr;
    size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        b->ptr = realloc(b->ptr, cap);
        if (!b->ptr) abort();
        b->cap = cap;
    }
    memcpy(b->ptr + b->len, data, n);
    b->len += n;
}

static void buf_str(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_num(buf_t *b, size_t n) {
    char digits[24];
    int i = sizeof digits;
    do {
        digits[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    buf_add(b, digits + i, sizeof digits - i);
}

enum outcome { PARTIAL, REQUEST, BAD_REQUEST, HEAD_TOO_LARGE, NOT_IMPLEMENTED };
enum method { GET, HEAD, OTHER };

typedef struct {
    size_t len;      /* bytes of the head, blank line included */
    enum method method;
    bool root;       /* the path (without query) is "/" */
    int minor;       /* HTTP/1.<minor> */
    bool keep_alive;
    uint64_t body_len;
} head_t;

static bool is_tchar(uint8_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static bool is_vchar(uint8_t c) { return c > 0x20 && c < 0x7f; }

/* Length of the leading empty lines ("\r\n" or "\n"). */
static size_t skip_empty_lines(const uint8_t *p, size_t n) {
    size_t i = 0;
    for (;;) {
        if (i + 1 < n && p[i] == '\r' && p[i + 1] == '\n') i += 2;
        else if (i < n && p[i] == '\n') i += 1;
        else return i;
    }
}

/* Whether the first (possibly incomplete) line can still become
 * `METHOD SP target SP HTTP/d.d`. */
static bool request_line_plausible(const uint8_t *p, size_t n) {
    size_t start = skip_empty_lines(p, n);
    const uint8_t *line = p + start;
    size_t len = n - start;
    const uint8_t *nl = memchr(line, '\n', len);
    bool complete = nl != NULL;
    if (nl) len = (size_t)(nl - line);
    if (len && line[len - 1] == '\r') len--;
    if (len == 0) return true;

    size_t m = 0;
    while (m < len && is_tchar(line[m])) m++;
    if (m == 0) return false;
    if (m == len) return !complete;
    if (line[m] != ' ') return false;
    const uint8_t *after = line + m + 1;
    size_t rest = len - m - 1;
    size_t t = 0;
    while (t < rest && is_vchar(after[t])) t++;
    if (t == rest) return !complete;
    if (after[t] != ' ' || t == 0) return false;
    const uint8_t *version = after + t + 1;
    size_t vlen = rest - t - 1;
    static const char pattern[] = "HTTP/D.D";
    if (vlen > 8 || (complete && vlen != 8)) return false;
    for (size_t i = 0; i < vlen; i++) {
        if (pattern[i] == 'D' ? !is_digit(version[i]) : version[i] != (uint8_t)pattern[i]) return false;
    }
    return true;
}

static bool equals_nocase(const uint8_t *p, size_t n, const char *s) {
    if (strlen(s) != n) return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t a = p[i], b = (uint8_t)s[i];
        if (a >= 'A' && a <= 'Z') a += 32;
        if (b >= 'A' && b <= 'Z') b += 32;
        if (a != b) return false;
    }
    return true;
}

static void trim(const uint8_t **p, size_t *n) {
    while (*n && (**p == ' ' || **p == '\t')) (*p)++, (*n)--;
    while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t')) (*n)--;
}

/* Classifies the request head at the start of p[0..n). */
static enum outcome parse(const uint8_t *p, size_t n, head_t *head) {
    if (!request_line_plausible(p, n)) return BAD_REQUEST;
    /* Find the blank line that ends the head. */
    size_t pos = skip_empty_lines(p, n), end = 0;
    size_t line_starts[MAX_HEADERS + 2], line_lens[MAX_HEADERS + 2];
    size_t lines = 0;
    for (;;) {
        const uint8_t *nl = memchr(p + pos, '\n', n - pos);
        if (!nl) return n > MAX_HEAD ? HEAD_TOO_LARGE : PARTIAL;
        size_t len = (size_t)(nl - (p + pos));
        size_t next = pos + len + 1;
        if (len && p[pos + len - 1] == '\r') len--;
        if (len == 0) {
            end = next;
            break;
        }
        if (lines == MAX_HEADERS + 1) return HEAD_TOO_LARGE;
        line_starts[lines] = pos;
        line_lens[lines] = len;
        lines++;
        pos = next;
    }
    if (end > MAX_HEAD) return HEAD_TOO_LARGE;

    /* Request line: METHOD SP target SP HTTP/1.x */
    const uint8_t *line = p + line_starts[0];
    size_t len = line_lens[0];
    const uint8_t *sp1 = memchr(line, ' ', len);
    const uint8_t *sp2 = sp1 ? memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - line)) : NULL;
    if (!sp1 || !sp2) return BAD_REQUEST;
    const uint8_t *version = sp2 + 1;
    size_t vlen = len - (size_t)(version - line);
    if (vlen != 8 || memcmp(version, "HTTP/1.", 7) != 0 || (version[7] != '0' && version[7] != '1'))
        return BAD_REQUEST;
    size_t mlen = (size_t)(sp1 - line);
    head->method = mlen == 3 && !memcmp(line, "GET", 3) ? GET
                 : mlen == 4 && !memcmp(line, "HEAD", 4) ? HEAD
                 : OTHER;
    const uint8_t *target = sp1 + 1;
    size_t tlen = (size_t)(sp2 - target);
    const uint8_t *q = memchr(target, '?', tlen);
    if (q) tlen = (size_t)(q - target);
    head->root = tlen == 1 && target[0] == '/';
    head->minor = version[7] - '0';

    bool close = false, keep_alive = false, have_length = false;
    uint64_t body_len = 0;
    for (size_t i = 1; i < lines; i++) {
        const uint8_t *h = p + line_starts[i];
        size_t hlen = line_lens[i];
        size_t nlen = 0;
        while (nlen < hlen && is_tchar(h[nlen])) nlen++;
        if (nlen == 0 || nlen == hlen || h[nlen] != ':') return BAD_REQUEST;
        const uint8_t *value = h + nlen + 1;
        size_t value_len = hlen - nlen - 1;
        trim(&value, &value_len);
        if (equals_nocase(h, nlen, "connection")) {
            size_t s = 0;
            while (s <= value_len) {
                const uint8_t *comma = memchr(value + s, ',', value_len - s);
                size_t e = comma ? (size_t)(comma - value) : value_len;
                const uint8_t *tok = value + s;
                size_t tok_len = e - s;
                trim(&tok, &tok_len);
                close |= equals_nocase(tok, tok_len, "close");
                keep_alive |= equals_nocase(tok, tok_len, "keep-alive");
                s = e + 1;
            }
        } else if (equals_nocase(h, nlen, "transfer-encoding")) {
            return NOT_IMPLEMENTED;
        } else if (equals_nocase(h, nlen, "content-length")) {
            if (value_len == 0 || value_len > 19) return BAD_REQUEST;
            uint64_t v = 0;
            for (size_t k = 0; k < value_len; k++) {
                if (!is_digit(value[k])) return BAD_REQUEST;
                v = v * 10 + (uint64_t)(value[k] - '0');
            }
            if (have_length && v != body_len) return BAD_REQUEST;
            have_length = true;
            body_len = v;
        }
    }
    head->len = end;
    head->keep_alive = !close && (head->minor >= 1 || keep_alive);
    head->body_len = body_len;
    return REQUEST;
}

static void write_response(buf_t *out, const char *status, const char *extra, const char *body,
                           bool send_body) {
    buf_str(out, "HTTP/1.1 ");
    buf_str(out, status);
    buf_str(out, "\r\nServer: plughost-http-hello\r\nContent-Type: text/plain\r\n");
    buf_str(out, extra);
    buf_str(out, "Content-Length: ");
    buf_num(out, strlen(body));
    buf_str(out, "\r\n\r\n");
    if (send_body) buf_str(out, body);
}

static void respond(const head_t *head, buf_t *out) {
    const char *connection = !head->keep_alive ? "Connection: close\r\n"
                           : head->minor == 0  ? "Connection: keep-alive\r\n"
                                               : "";
    char extra[64] = "";
    if (head->method == OTHER) {
        strcat(extra, "Allow: GET, HEAD\r\n");
        strcat(extra, connection);
        write_response(out, "405 Method Not Allowed", extra, "Method Not Allowed\n", true);
    } else if (head->root) {
        write_response(out, "200 OK", connection, "Hello, World!", head->method != HEAD);
    } else {
        write_response(out, "404 Not Found", connection, "Not Found\n", head->method != HEAD);
    }
}

static void reject(enum outcome why, buf_t *out) {
    const char *close = "Connection: close\r\n";
    switch (why) {
    case HEAD_TOO_LARGE:
        write_response(out, "431 Request Header Fields Too Large", close,
                       "Request Header Fields Too Large\n", true);
        break;
    case NOT_IMPLEMENTED:
        write_response(out, "501 Not Implemented", close, "Transfer-Encoding not supported\n", true);
        break;
    default:
        write_response(out, "400 Bad Request", close, "Bad Request\n", true);
    }
}

/* Skips up to *discard body bytes from start; returns the new start. */
static size_t skip(const buf_t *b, size_t start, uint64_t *discard) {
    size_t n = b->len - start;
    if ((uint64_t)n > *discard) n = (size_t)*discard;
    *discard -= n;
    return start + n;
}

/* Ends our side, then reads and drops what the client still sends
 * (bounded), so its last response is not destroyed by a reset. */
static void linger(ph_conn conn) {
    ph_error code;
    if (!plughost_handler_connections_method_connection_shutdown(
            conn, PLUGHOST_HANDLER_CONNECTIONS_SHUTDOWN_HOW_WRITE, &code))
        return;
    uint64_t timeout_ms = 250;
    plughost_handler_connections_method_connection_set_timeout(conn, &timeout_ms);
    size_t budget = 256 * 1024;
    for (int i = 0; i < 8; i++) {
        handler_list_u8_t data;
        if (!ph_read(conn, budget < CHUNK ? (uint32_t)budget : CHUNK, &data, &code)) return;
        size_t got = data.len;
        handler_list_u8_free(&data);
        if (got == 0 || got >= budget) return;
        budget -= got;
    }
}

static bool serve(ph_conn conn, handler_string_t *err) {
    buf_t buf = {0}, out = {0};
    uint64_t discard = 0;
    bool ok = true;
    for (;;) {
        size_t start = skip(&buf, 0, &discard);
        bool close = false;
        out.len = 0;
        while (discard == 0 && start < buf.len) {
            head_t head;
            enum outcome o = parse(buf.ptr + start, buf.len - start, &head);
            if (o == PARTIAL) break;
            if (o != REQUEST) {
                reject(o, &out);
                close = true;
                break;
            }
            respond(&head, &out);
            start += head.len;
            discard = head.body_len;
            start = skip(&buf, start, &discard);
            if (!head.keep_alive) {
                close = true;
                break;
            }
        }
        memmove(buf.ptr, buf.ptr + start, buf.len - start);
        buf.len -= start;
        ph_error code;
        if (out.len && !ph_write_all(conn, out.ptr, out.len, &code)) {
            ok = ph_fail(err, "write", code);
            break;
        }
        if (close) {
            linger(conn);
            break;
        }
        handler_list_u8_t data;
        if (!ph_read(conn, CHUNK, &data, &code)) {
            /* the client went away: nothing left to answer */
            if (code != PLUGHOST_HANDLER_CONNECTIONS_ERROR_CODE_RESET &&
                code != PLUGHOST_HANDLER_CONNECTIONS_ERROR_CODE_CLOSED &&
                code != PLUGHOST_HANDLER_CONNECTIONS_ERROR_CODE_BROKEN_PIPE)
                ok = ph_fail(err, "read", code);
            break;
        }
        size_t got = data.len;
        if (got) buf_add(&buf, data.ptr, got);
        handler_list_u8_free(&data);
        if (got == 0) break;
    }
    free(buf.ptr);
    free(out.ptr);
    return ok;
}

bool exports_handler_setup(ph_conn conn, handler_string_t *err) {
    (void)err;
    ph_release(conn);
    return true;
}

bool exports_handler_handle(ph_conn conn, handler_string_t *err) {
    bool ok = serve(conn, err);
    ph_release(conn);
    return ok;
}

void exports_handler_finish(ph_conn conn) {
    ph_release(conn);
}
