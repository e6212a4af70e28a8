/*
 * The echo plugin in C: returns exactly the bytes it receives
 * (binary-safe), until the client closes its side.
 */
#include "plughost.h"

/* How much one read asks for. */
#define CHUNK (64 * 1024)

bool exports_handler_setup(ph_conn conn, handler_string_t *err) {
    (void)err;
    ph_release(conn);
    return true;
}

bool exports_handler_handle(ph_conn conn, handler_string_t *err) {
    bool ok = true;
    for (;;) {
        handler_list_u8_t data;
        ph_error code;
        if (!ph_read(conn, CHUNK, &data, &code)) {
            ok = ph_fail(err, "read", code);
            break;
        }
        if (data.len == 0) { /* peer closed */
            handler_list_u8_free(&data);
            break;
        }
        bool wrote = ph_write_all(conn, data.ptr, data.len, &code);
        handler_list_u8_free(&data);
        if (!wrote) {
            ok = ph_fail(err, "write", code);
            break;
        }
    }
    ph_release(conn);
    return ok;
}

void exports_handler_finish(ph_conn conn) {
    ph_release(conn);
}
