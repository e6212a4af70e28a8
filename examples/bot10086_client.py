#!/usr/bin/env python3
"""Interactive client for the 10086 bot (the seeds' client, line-based).

Type `1xxx`, `0` (human operator) or `exit`. Usage:
    python3 examples/bot10086_client.py [--port 8000]
"""
import argparse
import socket
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with socket.create_connection((args.host, args.port)) as sock:
        replies = sock.makefile("r", encoding="utf-8")
        print(replies.readline().rstrip("\n"))
        for line in sys.stdin:
            sock.sendall(line.encode())
            reply = replies.readline()
            if not reply:
                print("(the bot hung up)")
                return
            print(reply.rstrip("\n"))


if __name__ == "__main__":
    main()
