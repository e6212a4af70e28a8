/*
 * The echo plugin in C on plughost's protocol world (as
 * plugins/rust/proto-echo): one instance serves every connection and sends
 * back exactly the bytes each one sends (binary-safe), until the client
 * closes its side.
 *
 * A client that sends faster than it reads is paused, as a blocking
 * `sendall` would pause it: when an echo cannot go out at once, reading
 * from that client stops until its output has drained.
 *
 * The exports are the exports_protocol_* functions of the bindings
 * `host bindgen c --world protocol` generates (protocol.h). There is no
 * borrowed handle to release: a transport is a number.
 */
#include "protocol.h"

bool exports_protocol_init(protocol_string_t *err) {
    (void)err;
    return true;
}

void exports_protocol_connection_made(protocol_transport_t t) { (void)t; }

void exports_protocol_data_received(protocol_transport_t t, protocol_list_u8_t *data) {
    plughost_handler_transports_write_error_t err;
    /* Refused whole (closed, or buffer-full): paused at the first buffered
     * byte, a client cannot fill its buffer, and a closed one needs
     * nothing more. */
    if (plughost_handler_transports_write(t, data, &err) &&
        plughost_handler_transports_buffered(t) > 0) {
        plughost_handler_transports_pause_reading(t);
    }
    /* The list is the plugin's to free. */
    protocol_list_u8_free(data);
}

void exports_protocol_write_drained(protocol_transport_t t) {
    plughost_handler_transports_resume_reading(t);
}

void exports_protocol_connection_lost(protocol_transport_t t, protocol_lost_reason_t reason) {
    (void)t;
    (void)reason;
}

void exports_protocol_timer_fired(protocol_timer_t t) { (void)t; }

/* A message on a subscribed topic (plughost:handler/topics); echo
 * subscribes to none, so this never runs. Both lists are the plugin's to
 * free. */
void exports_protocol_message_received(protocol_string_t *topic, protocol_list_u8_t *message) {
    protocol_string_free(topic);
    protocol_list_u8_free(message);
}
