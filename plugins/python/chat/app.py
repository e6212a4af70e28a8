"""The chat room of Twisted's tutorial, in Python on plughost's protocol
world (the same room as plugins/rust/chat): one instance holds the room,
every connection is a member.

- A client is `guestN` on arrival (N counts up from 1) and is greeted with
  `* welcome, guestN (/nick NAME to rename)`; the others see
  `* guestN joined`.
- Every line a client sends goes to every other client as `NAME: line`
  (a line ends at `\\n`; a `\\r` before it is dropped).
- `/nick NAME` renames the client (1 to 32 bytes, no spaces, not taken):
  the others see `* OLD is now NAME`, the client `* you are now NAME`.
  `/who` lists who is in the room. A departure is `* NAME left`.
- A client that stops reading never slows the room: the host bounds its
  unsent output, and a line that does not fit gets that client
  disconnected. A line longer than 4 KiB disconnects its sender.
"""

from plughost_protocol import BufferFull, ConnectionClosed, Factory, LineReceiver, LostReason, serve

# Longest line a client may send, and longest name, in bytes.
MAX_LINE = 4096
MAX_NAME = 32


def valid_name(name: str) -> bool:
    """1 to MAX_NAME bytes, with no whitespace or control character."""
    return 0 < len(name.encode()) <= MAX_NAME and not any(
        c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name
    )


class Member(LineReceiver):
    """One client of the room."""

    MAX_LENGTH = MAX_LINE
    name = ""

    def connection_made(self) -> None:
        self.factory.join(self)

    def connection_lost(self, reason: LostReason) -> None:
        self.factory.leave(self)

    def line_received(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace")
        if line.startswith("/nick "):
            self.factory.rename(self, line[len("/nick "):].strip())
        elif line.strip() == "/who":
            self.send(f"* here: {', '.join(sorted(m.name for m in self.factory.members))}\n")
        else:
            self.factory.broadcast(self, f"{self.name}: {line}\n")

    def line_length_exceeded(self, line: bytes) -> None:
        self.transport.abort("sent a line longer than 4 KiB")

    def send(self, text: str) -> None:
        """Writes `text`, dropping this member if it cannot keep up."""
        try:
            self.transport.write(text.encode())
        except BufferFull:
            self.transport.abort("output buffer full: the client is not reading the room")
        except ConnectionClosed:
            pass  # on its way out: connection_lost tells the room


class Room(Factory):
    """The room: its members in order of arrival, and who has which name."""

    protocol = Member

    def __init__(self) -> None:
        self.members: list[Member] = []
        self.by_name: dict[str, Member] = {}
        self.guests = 0

    def broadcast(self, sender: Member, text: str) -> None:
        for member in self.members:
            if member is not sender:
                member.send(text)

    def join(self, member: Member) -> None:
        # A name nobody took with /nick.
        while True:
            self.guests += 1
            member.name = f"guest{self.guests}"
            if member.name not in self.by_name:
                break
        member.send(f"* welcome, {member.name} (/nick NAME to rename)\n")
        self.broadcast(member, f"* {member.name} joined\n")
        self.members.append(member)
        self.by_name[member.name] = member

    def leave(self, member: Member) -> None:
        if member in self.members:
            self.members.remove(member)
            del self.by_name[member.name]
            self.broadcast(member, f"* {member.name} left\n")

    def rename(self, member: Member, new: str) -> None:
        if not valid_name(new):
            return member.send(f"* a name is 1 to {MAX_NAME} characters without spaces\n")
        if new in self.by_name:
            return member.send(f"* {new} is taken\n")
        old = member.name
        del self.by_name[old]
        self.by_name[new] = member
        member.name = new
        self.broadcast(member, f"* {old} is now {new}\n")
        member.send(f"* you are now {new}\n")


WitWorld = serve(Room)
