"""The echo plugin in Python on plughost's protocol world (as
plugins/rust/proto-echo): one instance serves every connection and sends
back exactly the bytes each one sends (binary-safe), until the client
closes its side.

A client that sends faster than it reads is paused, as a blocking
`sendall` would pause it: when an echo cannot go out at once, reading from
that client stops until its output has drained.
"""

from plughost_protocol import Factory, Protocol, WriteError, serve


class Echo(Protocol):
    def data_received(self, data: bytes) -> None:
        try:
            self.transport.write(data)
        except WriteError:
            # Paused at the first buffered byte, a client cannot fill its
            # buffer; a closed one needs nothing more.
            return
        if self.transport.buffered() > 0:
            self.transport.pause_reading()

    def write_drained(self) -> None:
        self.transport.resume_reading()


class EchoFactory(Factory):
    protocol = Echo


WitWorld = serve(EchoFactory)
