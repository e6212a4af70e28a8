#!/usr/bin/env python3
"""Chat client for the `chat` plugin: prints what the room says, sends what you type.

Usage: python3 examples/chat_client.py [--host 127.0.0.1] [--port 8000]
Type `/nick NAME` to rename yourself, `/who` to list the room, Ctrl-D to leave.
"""
import argparse
import socket
import sys
import threading


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    sock = socket.create_connection((args.host, args.port), timeout=5)
    sock.settimeout(None)

    def show() -> None:
        for line in sock.makefile("rb"):
            print(line.decode(errors="replace"), end="", flush=True)
        print("(the host closed the connection)")

    threading.Thread(target=show, daemon=True).start()
    for line in sys.stdin:
        sock.sendall(line.encode())
    sock.shutdown(socket.SHUT_WR)


if __name__ == "__main__":
    main()
