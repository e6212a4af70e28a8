#!/usr/bin/env python3
"""UDP client: sends each argument as one datagram and prints the replies.

Usage: python3 examples/udp_client.py [--port 9000] [message ...]
"""
import argparse
import socket


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("messages", nargs="*", default=["hello, udp"])
    args = parser.parse_args()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for message in args.messages:
            sock.sendto(message.encode(), (args.host, args.port))
            reply, _ = sock.recvfrom(65536)
            print(reply.decode(errors="replace"))


if __name__ == "__main__":
    main()
