"""The echo plugin in Python: returns exactly the bytes it receives
(binary-safe), until the client closes its side."""

# Imported here so that componentize-py's build-time snapshot holds it:
# the first connection handle dropped runs `weakref.finalize`, which
# imports `atexit` on first use, and without this every connection's
# fresh instance would pay that import (about 0.15 ms of CPU and 300 KiB).
import atexit  # noqa: F401

import wit_world
from componentize_py_types import Err
from wit_world.imports.connections import Connection, ErrorCode

# How much one read asks for.
CHUNK = 64 * 1024


def error_name(code: ErrorCode) -> str:
    """The WIT name of an error code (`broken-pipe`, ...)."""
    return code.name.lower().replace("_", "-")


class WitWorld(wit_world.WitWorld):
    def setup(self, conn: Connection) -> None:
        pass

    def handle(self, conn: Connection) -> None:
        while True:
            try:
                data = conn.read(CHUNK)
            except Err as e:
                raise Err(f"read: {error_name(e.value)}")
            if not data:
                return  # peer closed
            try:
                conn.write(data)
            except Err as e:
                raise Err(f"write: {error_name(e.value)}")

    def finish(self, conn: Connection) -> None:
        pass
