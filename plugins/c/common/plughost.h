/*
 * plughost.h: small helpers over the bindings `host bindgen c` generates
 * for the handler world (handler.h). Header-only; shared by the C plugins.
 *
 * Every export must release its borrowed connection before it returns:
 * call ph_release(conn) (the generated ..._connection_drop_borrow) on every
 * path, or wasmtime traps ("borrow handles still remain at the end of the
 * call").
 */
#ifndef PLUGHOST_H
#define PLUGHOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "handler.h"

typedef plughost_handler_connections_borrow_connection_t ph_conn;
typedef plughost_handler_connections_error_code_t ph_error;

/* The WIT error-code names. */
static inline const char *ph_error_name(ph_error code) {
    switch (code) {
    case PLUGHOST_HANDLER_CONNECTIONS_ERROR_CODE_CLOSED: return "closed";
    case PLUGHOST_HANDLER_CONNECTIONS_ERROR_CODE_TIMED_OUT: return "timed-out";
    case PLUGHOST_HANDLER_CONNECTIONS_ERROR_CODE_RESET: return "reset";
    case PLUGHOST_HANDLER_CONNECTIONS_ERROR_CODE_BROKEN_PIPE: return "broken-pipe";
    case PLUGHOST_HANDLER_CONNECTIONS_ERROR_CODE_INVALID_ARGUMENT: return "invalid-argument";
    default: return "other";
    }
}

/* Reads up to max bytes into *out (free it with handler_list_u8_free);
 * an empty list means the peer closed. */
static inline bool ph_read(ph_conn conn, uint32_t max, handler_list_u8_t *out, ph_error *err) {
    return plughost_handler_connections_method_connection_read(conn, max, out, err);
}

/* Writes all n bytes (the host loops until everything is sent). */
static inline bool ph_write_all(ph_conn conn, const uint8_t *data, size_t n, ph_error *err) {
    handler_list_u8_t list = {(uint8_t *)data, n};
    return plughost_handler_connections_method_connection_write(conn, &list, err);
}

/* Sets *msg to "<what>: <error name>" and returns false (for `return
 * ph_fail(...)` from an export). */
static inline bool ph_fail(handler_string_t *msg, const char *what, ph_error code) {
    const char *name = ph_error_name(code);
    size_t a = strlen(what), b = strlen(name);
    char text[a + 2 + b + 1];
    memcpy(text, what, a);
    memcpy(text + a, ": ", 2);
    memcpy(text + a + 2, name, b + 1);
    handler_string_dup(msg, text);
    return false;
}

/* Releases the borrowed connection; call before every export returns. */
static inline void ph_release(ph_conn conn) {
    plughost_handler_connections_connection_drop_borrow(conn);
}

#endif
