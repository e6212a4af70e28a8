"""The Python comparison target of the loopback bench: an echo server on
socketserver.ThreadingTCPServer (a thread per connection), as in the
project's seeds, with the native reference's settings (TCP_NODELAY,
64 KiB reads, backlog 1024). Prints its address, then serves until
SIGTERM."""

import socket
import socketserver


class Echo(socketserver.BaseRequestHandler):
    def setup(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 1024


with Server(("127.0.0.1", 0), Echo) as server:
    host, port = server.server_address
    print(f"{host}:{port}", flush=True)
    server.serve_forever()
