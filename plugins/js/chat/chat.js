// The chat room of Twisted's tutorial, in JavaScript on plughost's
// protocol world (the same room as plugins/rust/chat): one instance holds
// the room, every connection is a member.
//
// - A client is `guestN` on arrival (N counts up from 1) and is greeted
//   with `* welcome, guestN (/nick NAME to rename)`; the others see
//   `* guestN joined`.
// - Every line a client sends goes to every other client as `NAME: line`
//   (a line ends at `\n`; a `\r` before it is dropped).
// - `/nick NAME` renames the client (1 to 32 bytes, no spaces, not taken):
//   the others see `* OLD is now NAME`, the client `* you are now NAME`.
//   `/who` lists who is in the room. A departure is `* NAME left`.
// - A client that stops reading never slows the room: the host bounds its
//   unsent output, and a line that does not fit gets that client
//   disconnected. A line longer than 4 KiB disconnects its sender.
//
// The exports are the world's functions in camelCase; a transport is a
// BigInt (WIT u64), a failed import throws an error whose `payload` is the
// WIT error name ("buffer-full", "closed").

import { abort, write } from "plughost:handler/transports@0.1.4";

// Longest line a client may send, and longest name, in bytes.
const MAX_LINE = 4096;
const MAX_NAME = 32;

const NEWLINE = 0x0a;
const RETURN = 0x0d;
// Unicode's White_Space characters (Rust's char::is_whitespace; not JS's
// \s, nor String.prototype.trim) and, for names, the control characters
// (is_control). Spelled out: this build of SpiderMonkey has no \p{...}.
const WHITE_SPACE = "\\t-\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const NOT_IN_A_NAME = new RegExp(`[${WHITE_SPACE}\\0-\\x1f\\x7f-\\x9f]`);
const OUTER_SPACE = new RegExp(`^[${WHITE_SPACE}]+|[${WHITE_SPACE}]+$`, "g");

const encoder = new TextEncoder();
// Invalid UTF-8 becomes U+FFFD; a byte-order mark is kept as sent.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** One client of the room. */
class Member {
  constructor(transport, name) {
    this.transport = transport;
    this.name = name;
    // Bytes of an unfinished line.
    this.partial = new Uint8Array(0);
  }

  /** Writes `text`, dropping this member if it cannot keep up. */
  send(text) {
    try {
      write(this.transport, encoder.encode(text));
    } catch (e) {
      // `closed`: on its way out, connectionLost tells the room.
      if (e?.payload === "buffer-full") {
        abort(this.transport, "output buffer full: the client is not reading the room");
      }
    }
  }
}

// The members by transport, in order of arrival, and who has which name.
const members = new Map();
const byName = new Map();
// The last guest number given.
let guests = 0;

/** Sends `text` to every member but `sender`. */
function broadcast(sender, text) {
  for (const member of members.values()) {
    if (member !== sender) member.send(text);
  }
}

function trim(text) {
  return text.replace(OUTER_SPACE, "");
}

function rename(member, wanted) {
  const bytes = encoder.encode(wanted).length;
  if (bytes === 0 || bytes > MAX_NAME || NOT_IN_A_NAME.test(wanted)) {
    member.send(`* a name is 1 to ${MAX_NAME} characters without spaces\n`);
  } else if (byName.has(wanted)) {
    member.send(`* ${wanted} is taken\n`);
  } else {
    const old = member.name;
    byName.delete(old);
    byName.set(wanted, member);
    member.name = wanted;
    broadcast(member, `* ${old} is now ${wanted}\n`);
    member.send(`* you are now ${wanted}\n`);
  }
}

/** One complete line from `member`. */
function line(member, text) {
  if (text.startsWith("/nick ")) {
    rename(member, trim(text.slice("/nick ".length)));
  } else if (trim(text) === "/who") {
    const names = [...members.values()].map((m) => m.name).sort();
    member.send(`* here: ${names.join(", ")}\n`);
  } else {
    broadcast(member, `${member.name}: ${text}\n`);
  }
}

export function init() {}

export function connectionMade(t) {
  // A name nobody took with /nick.
  let name;
  do {
    guests += 1;
    name = `guest${guests}`;
  } while (byName.has(name));
  const member = new Member(t, name);
  member.send(`* welcome, ${name} (/nick NAME to rename)\n`);
  broadcast(member, `* ${name} joined\n`);
  members.set(t, member);
  byName.set(name, member);
}

export function dataReceived(t, data) {
  const member = members.get(t);
  if (!member) return;
  let pending = data;
  if (member.partial.length > 0) {
    pending = new Uint8Array(member.partial.length + data.length);
    pending.set(member.partial);
    pending.set(data, member.partial.length);
  }
  let start = 0;
  for (let end; (end = pending.indexOf(NEWLINE, start)) !== -1; start = end + 1) {
    const stop = end > start && pending[end - 1] === RETURN ? end - 1 : end;
    line(member, decoder.decode(pending.subarray(start, stop)));
  }
  member.partial = pending.slice(start);
  if (member.partial.length > MAX_LINE) abort(t, "sent a line longer than 4 KiB");
}

export function writeDrained(t) {}

export function connectionLost(t, reason) {
  const member = members.get(t);
  if (!member) return;
  members.delete(t);
  byName.delete(member.name);
  broadcast(member, `* ${member.name} left\n`);
}

export function timerFired(timer) {}

// A message on a subscribed topic (plughost:handler/topics@0.1.4): this
// plugin subscribes to none, so it never runs.
export function messageReceived(topic, message) {}
