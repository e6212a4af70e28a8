"""The 10086 customer-service bot in Python: a line-based UTF-8
conversation, with the same texts and rules as the Rust one
(plugins/rust/bot10086).

On connect the bot sends WELCOME. Every message gets one reply, in order:
`0` -> OPERATOR, `exit` -> the bot closes the connection, anything else
(including an empty line) -> RETRY. Surrounding whitespace is ignored.

What a message is:
* each `\\n`-terminated line (a `\\r` before the `\\n` is dropped);
* bytes left without a newline at the end of a read (simple clients send
  `0` and wait); if the next read starts with that line's terminator
  (`\\n` or `\\r\\n`), the terminator only completes the message already
  answered;
* a line longer than MAX_LINE bytes gets TOO_LONG and the bot closes.
"""

# Imported here so that componentize-py's build-time snapshot holds it:
# the first connection handle dropped runs `weakref.finalize`, which
# imports `atexit` on first use, and without this every connection's
# fresh instance would pay that import (about 0.15 ms of CPU and 300 KiB).
import atexit  # noqa: F401

import wit_world
from componentize_py_types import Err
from wit_world.imports.connections import Connection, ErrorCode

WELCOME = "欢迎致电 10086,请输入1xxx,0转人工服务.\n"
OPERATOR = "通过可能会被录音.balabala一大推\n"
RETRY = "请重新输入.\n"
TOO_LONG = "输入过长,再见.\n"

MAX_LINE = 4096
CHUNK = 64 * 1024

# What split() yields besides messages (bytes).
TOO_LONG_LINE = object()


def error_name(code: ErrorCode) -> str:
    return code.name.lower().replace("_", "-")


class Splitter:
    """Cuts reads into messages; remembers whether the previous read ended
    in the middle of a line."""

    def __init__(self) -> None:
        self.after_unterminated = False

    def split(self, data: bytes) -> list:
        if self.after_unterminated:
            if data.startswith(b"\r"):
                if len(data) == 1:
                    return []  # still waiting for a possible "\n"
                data = data[1:]
            if data.startswith(b"\n"):
                data = data[1:]
        pieces: list = []
        lines = data.split(b"\n")
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            if last and not line:
                # data was empty or ended with "\n"
                self.after_unterminated = False
                break
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_LINE:
                pieces.append(TOO_LONG_LINE)
                break
            pieces.append(line)
            if last:
                self.after_unterminated = True
        return pieces


def respond(message: bytes):
    """The reply to one message, or None to close."""
    text = message.decode("utf-8", errors="replace").strip()
    if text == "0":
        return OPERATOR
    if text == "exit":
        return None
    return RETRY


def send(conn: Connection, text: str) -> None:
    try:
        conn.write(text.encode())
    except Err as e:
        raise Err(f"write: {error_name(e.value)}")


class WitWorld(wit_world.WitWorld):
    def setup(self, conn: Connection) -> None:
        pass

    def handle(self, conn: Connection) -> None:
        send(conn, WELCOME)
        splitter = Splitter()
        while True:
            try:
                data = conn.read(CHUNK)
            except Err as e:
                raise Err(f"read: {error_name(e.value)}")
            if not data:
                return
            # All replies to one packet go out in one write, in order.
            out = []
            close = False
            for piece in splitter.split(data):
                if piece is TOO_LONG_LINE:
                    out.append(TOO_LONG)
                    close = True
                    break
                reply = respond(piece)
                if reply is None:
                    close = True
                    break
                out.append(reply)
            if out:
                send(conn, "".join(out))
            if close:
                return

    def finish(self, conn: Connection) -> None:
        pass
