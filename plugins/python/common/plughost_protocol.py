"""plughost_protocol: plughost's `protocol` world in the shape of Twisted's
`Protocol` and `Factory`. One instance of the plugin serves every
connection of a listener, so connections can share state (a chat room);
each connection gets a `Protocol` object of its own, built by the plugin's
`Factory`:

    from plughost_protocol import Factory, Protocol, serve

    class Echo(Protocol):
        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    class EchoFactory(Factory):
        protocol = Echo

    WitWorld = serve(EchoFactory)      # what componentize-py exports

The host calls the world's exports one at a time; `serve` dispatches them
to the connection's `Protocol` (`connection_made`, `data_received`,
`write_drained`, `connection_lost`), to the callables given to
`call_later`, and messages on subscribed topics (`subscribe`, with a
store granted: `host run --store memory`) to `Factory.message_received`. No callback may wait: there is no blocking read, and
`Transport.write` returns at once (it raises `BufferFull` when the host's
per-connection bound on unsent output would be passed).

An exception escaping a connection's callback is printed (to the host's
log) and aborts that connection only, as in Twisted; the other
connections go on. An exception from a `call_later` callable is printed.
`plugins/python/build.sh` bundles this file with every plugin that
imports it.
"""

import traceback
from typing import Any, Callable, NamedTuple, Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import config as _config
from wit_world.imports import timers as _timers
from wit_world.imports import topics as _topics
from wit_world.imports import transports as _transports
from wit_world.imports.transports import LostReason

__all__ = [
    "Address",
    "BufferFull",
    "ConnectionClosed",
    "DelayedCall",
    "Factory",
    "LineReceiver",
    "LostReason",
    "Protocol",
    "StoreError",
    "Transport",
    "WriteError",
    "call_later",
    "config",
    "publish",
    "serve",
    "subscribe",
    "unsubscribe",
    "write_limit",
]


class WriteError(Exception):
    """A write the host refused; nothing of the data was written."""


class ConnectionClosed(WriteError):
    """The connection is closed or closing (`close`, `abort`, or the host
    closed it): there is no one to write to."""


class BufferFull(WriteError):
    """The data would take the connection's unsent output past the host's
    bound (`write_limit()`): the peer is not reading fast enough. Pause the
    producer until `write_drained`, or `abort` the connection."""


class StoreError(Exception):
    """A topic call the host refused: the listener has no store
    (`no-store`), the topic name or message is out of bounds (`invalid`),
    or the backend is unreachable (`unavailable`); the text says which."""


class Address(NamedTuple):
    """An address: `host` is the IP in its text form (or `unix:<path>` on
    a Unix-socket listener, with `port` 0)."""

    host: str
    port: int


def _address(address: Optional[_transports.SocketAddress]) -> Optional[Address]:
    return None if address is None else Address(address.ip, address.port)


class Transport:
    """One connection (the WIT `transport`). Keep it to write to the
    connection from any later callback; after `connection_lost` writes
    to it raise `ConnectionClosed`."""

    __slots__ = ("number",)

    def __init__(self, number: int) -> None:
        self.number = number

    def __repr__(self) -> str:
        return f"Transport({self.number})"

    def write(self, data: bytes) -> None:
        """Queues `data` after what was written before; returns at once.
        The host gathers small writes and sends them together, and buffers
        what the socket does not take. Raises
        `BufferFull` or `ConnectionClosed`."""
        try:
            _transports.write(self.number, data)
        except Err as e:
            if e.value == _transports.WriteError.BUFFER_FULL:
                raise BufferFull(f"{self}: output buffer full") from None
            raise ConnectionClosed(f"{self}: connection closed") from None

    def buffered(self) -> int:
        """Bytes written that the socket has not taken."""
        return _transports.buffered(self.number)

    def close(self) -> None:
        """Closes the connection once what was written is sent (Twisted's
        `loseConnection`); `connection_lost` follows."""
        _transports.close(self.number)

    def abort(self, reason: str = "aborted by the plugin") -> None:
        """Closes the connection now, dropping unsent output
        (`abortConnection`); `reason` goes to the host's log."""
        _transports.abort(self.number, reason)

    def pause_reading(self) -> None:
        """No `data_received` for this connection until `resume_reading`."""
        _transports.pause_reading(self.number)

    def resume_reading(self) -> None:
        """Reads from this connection again."""
        _transports.resume_reading(self.number)

    @property
    def peer(self) -> Optional[Address]:
        """The client's address (`None` once the connection is gone)."""
        return _address(_transports.peer_address(self.number))

    @property
    def host(self) -> Optional[Address]:
        """The address the host accepted the connection on."""
        return _address(_transports.local_address(self.number))


class Protocol:
    """What one connection does on each event. `self.transport` is its
    connection and `self.factory` the factory that built it (the state all
    connections share). Override what you need."""

    factory: "Factory"
    transport: Transport

    def connection_made(self) -> None:
        """The client connected (`self.transport` is set)."""

    def data_received(self, data: bytes) -> None:
        """Bytes arrived (at most 64 KiB per call, in order: a message may
        come split over several calls, or several in one)."""

    def write_drained(self) -> None:
        """Everything written was sent, after a write had to be buffered:
        resume a producer paused for `BufferFull` here."""

    def connection_lost(self, reason: LostReason) -> None:
        """The connection is gone (exactly once, whoever closed it)."""


class LineReceiver(Protocol):
    """A `Protocol` that splits what arrives into lines and calls
    `line_received` with each one (without its `\\n`, and without a `\\r`
    before it, so `\\r\\n` and `\\n` both end a line). A line still
    unfinished after what arrived is longer than `MAX_LENGTH` bytes calls
    `line_length_exceeded`, which aborts the connection."""

    delimiter = b"\n"
    MAX_LENGTH = 16384
    _buffer = b""

    def data_received(self, data: bytes) -> None:
        *lines, self._buffer = (self._buffer + data).split(self.delimiter)
        for line in lines:
            self.line_received(line.removesuffix(b"\r"))
        if len(self._buffer) > self.MAX_LENGTH:
            self.line_length_exceeded(self._buffer)

    def line_received(self, line: bytes) -> None:
        """One complete line arrived."""
        raise NotImplementedError(f"{type(self).__name__} must define line_received")

    def line_length_exceeded(self, line: bytes) -> None:
        """The unfinished `line` passed `MAX_LENGTH`."""
        self.transport.abort(f"sent a line longer than {self.MAX_LENGTH} bytes")

    def send_line(self, line: bytes) -> None:
        """Writes `line` and the delimiter (raises as `Transport.write`)."""
        self.transport.write(line + self.delimiter)


class Factory:
    """The instance's shared state, made once (in the world's `init`); it
    builds a `protocol` for every connection."""

    protocol: type = Protocol

    def start_factory(self) -> None:
        """Called once, before any connection."""

    def message_received(self, topic: str, message: bytes) -> None:
        """A message arrived on a topic this instance subscribed to
        (`subscribe`), including its own publishes."""

    def build_protocol(self, addr: Optional[Address]) -> Protocol:
        """A new `Protocol` for a client at `addr`, with `factory` set."""
        protocol = self.protocol()
        protocol.factory = self
        return protocol


class DelayedCall:
    """A pending `call_later`."""

    __slots__ = ("timer", "call")

    def __init__(self, timer: int, call: Callable[[], Any]) -> None:
        self.timer = timer
        self.call = call

    def active(self) -> bool:
        """Whether it has neither run nor been cancelled."""
        return _pending.get(self.timer) is self

    def cancel(self) -> None:
        """Keeps it from running (nothing happens if it ran already)."""
        if _pending.pop(self.timer, None) is self:
            _timers.cancel(self.timer)


def call_later(delay: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> DelayedCall:
    """Calls `fn(*args, **kwargs)` once, `delay` seconds from now
    (`reactor.callLater`). Raises RuntimeError when the instance has as
    many pending timers as the host allows."""
    try:
        timer = _timers.call_later(max(0, round(delay * 1000)))
    except Err as e:
        raise RuntimeError(f"call_later: {e.value}") from None
    call = DelayedCall(timer, lambda: fn(*args, **kwargs))
    _pending[timer] = call
    return call


def write_limit() -> int:
    """The most bytes the host buffers for one connection."""
    return _transports.write_limit()


def _topic_call(what: str, call: Callable[[], Any]) -> None:
    try:
        call()
    except Err as e:
        kind = type(e.value).__name__.removeprefix("Error_").lower()
        detail = getattr(e.value, "value", None)
        raise StoreError(f"{what}: {kind}" + (f": {detail}" if detail else "")) from None


def publish(topic: str, message: bytes) -> None:
    """Sends `message` to every subscriber of `topic` (on every host
    sharing the store); raises `StoreError`."""
    _topic_call(f"publish {topic}", lambda: _topics.publish(topic, message))


def subscribe(topic: str) -> None:
    """Delivers `topic`'s messages to `Factory.message_received`; raises
    `StoreError`."""
    _topic_call(f"subscribe {topic}", lambda: _topics.subscribe(topic))


def unsubscribe(topic: str) -> None:
    """Stops `topic`'s messages; raises `StoreError`."""
    _topic_call(f"unsubscribe {topic}", lambda: _topics.unsubscribe(topic))


def config(key: str) -> Optional[str]:
    """The value the operator set for `key` (`[listener.config]`), if any."""
    return _config.get(key)


# The instance's state: the factory (made by `init`), every connection's
# protocol by transport number, and the pending timers.
_factory: Optional[Factory] = None
_protocols: dict[int, Protocol] = {}
_pending: dict[int, DelayedCall] = {}


def _guarded(protocol: Protocol, what: str, callback: Callable[[], Any]) -> None:
    """Runs one of `protocol`'s callbacks; an exception is printed and
    aborts that connection only."""
    try:
        callback()
    except Exception as e:
        traceback.print_exc()
        protocol.transport.abort(f"{what} raised {type(e).__name__}: {e}")


def serve(make_factory: Callable[[], Factory]) -> type:
    """The class componentize-py exports (assign it to `WitWorld` in
    `app.py`): its `init` makes the factory with `make_factory()`, the
    other exports go to the connections' protocols."""

    class WitWorld(wit_world.WitWorld):
        def init(self) -> None:
            global _factory
            try:
                factory = make_factory()
                factory.start_factory()
            except Exception as e:
                traceback.print_exc()
                raise Err(f"starting the factory failed: {type(e).__name__}: {e}")
            _factory = factory

        def connection_made(self, t: int) -> None:
            transport = Transport(t)
            assert _factory is not None, "the host calls init first"
            try:
                protocol = _factory.build_protocol(transport.peer)
            except Exception as e:
                traceback.print_exc()
                transport.abort(f"build_protocol raised {type(e).__name__}: {e}")
                return
            protocol.transport = transport
            _protocols[t] = protocol
            _guarded(protocol, "connection_made", protocol.connection_made)

        def data_received(self, t: int, data: bytes) -> None:
            protocol = _protocols.get(t)
            if protocol is not None:
                _guarded(protocol, "data_received", lambda: protocol.data_received(data))

        def write_drained(self, t: int) -> None:
            protocol = _protocols.get(t)
            if protocol is not None:
                _guarded(protocol, "write_drained", protocol.write_drained)

        def connection_lost(self, t: int, reason: LostReason) -> None:
            protocol = _protocols.pop(t, None)
            if protocol is not None:
                try:
                    protocol.connection_lost(reason)
                except Exception:
                    traceback.print_exc()

        def message_received(self, topic: str, message: bytes) -> None:
            if _factory is not None:
                try:
                    _factory.message_received(topic, message)
                except Exception:
                    traceback.print_exc()

        def timer_fired(self, t: int) -> None:
            call = _pending.pop(t, None)
            if call is not None:
                try:
                    call.call()
                except Exception:
                    traceback.print_exc()

    return WitWorld
