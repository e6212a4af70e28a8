#!/usr/bin/env python3
"""Echo client: sends each argument (or one default message) and prints the reply.

Usage: python3 examples/echo_client.py [--port 8000] [message ...]
"""
import argparse
import socket


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("messages", nargs="*", default=["hello, plugin host"])
    args = parser.parse_args()
    with socket.create_connection((args.host, args.port), timeout=5) as sock:
        for message in args.messages:
            data = message.encode()
            sock.sendall(data)
            received = b""
            while len(received) < len(data):
                chunk = sock.recv(65536)
                if not chunk:
                    raise SystemExit("server closed the connection")
                received += chunk
            print(received.decode(errors="replace"))


if __name__ == "__main__":
    main()
