// The echo plugin in JavaScript on plughost's protocol world (as
// plugins/rust/proto-echo): one instance serves every connection and sends
// back exactly the bytes each one sends (binary-safe), until the client
// closes its side.
//
// A client that sends faster than it reads is paused, as a blocking
// `sendall` would pause it: when an echo cannot go out at once, reading
// from that client stops until its output has drained.
//
// The exports are the world's functions in camelCase; a transport is a
// BigInt (WIT u64).

import {
  buffered,
  pauseReading,
  resumeReading,
  write,
} from "plughost:handler/transports@0.1.4";

export function init() {}

export function connectionMade(t) {}

export function dataReceived(t, data) {
  try {
    write(t, data);
  } catch {
    // Refused whole (`closed` or `buffer-full`): paused at the first
    // buffered byte, a client cannot fill its buffer, and a closed one
    // needs nothing more.
    return;
  }
  if (buffered(t) > 0n) pauseReading(t);
}

export function writeDrained(t) {
  resumeReading(t);
}

export function connectionLost(t, reason) {}

export function timerFired(timer) {}

// A message on a subscribed topic (plughost:handler/topics@0.1.4): this
// plugin subscribes to none, so it never runs.
export function messageReceived(topic, message) {}
