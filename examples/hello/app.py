"""hello: the example app for paas. Serves a greeting on $PORT (set by the platform).

Endpoints: / (greeting), /healthz (health check), /slow?seconds=N (a long request),
/headers (the request's headers as the app got them, to see what the platform adds),
/echo (with `Connection: Upgrade`: switches protocols and echoes what it gets, as a WebSocket
tunnel would carry it),
and POST /health/fail and /health/ok to make this
replica's health check fail or pass (to watch the platform take it out of rotation).
"""
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
HEALTHY = threading.Event()
HEALTHY.set()


def message():
    # Config wins: `paas config set --app hello GREETING="Hi"` changes the page.
    if os.environ.get("GREETING"):
        return os.environ["GREETING"]
    with open(os.path.join(HERE, "message.txt"), encoding="utf-8") as f:
        return f.read().strip()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and
    # delayed ACKs add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    def reply(self, status, body):
        body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/healthz":
            self.reply(200 if HEALTHY.is_set() else 503, "ok\n" if HEALTHY.is_set() else "failing\n")
        elif url.path == "/slow":
            seconds = float(parse_qs(url.query).get("seconds", ["3"])[0])
            time.sleep(seconds)
            self.reply(200, f"{message()}\nslow request done after {seconds}s by {socket.gethostname()}\n")
        elif url.path == "/":
            self.reply(200, f"{message()}\nserved by {socket.gethostname()}\n")
        elif url.path == "/echo" and "upgrade" in self.headers.get("Connection", "").lower():
            self.echo()
        elif url.path == "/headers":
            self.reply(200, "".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items()))
        else:
            self.reply(404, "not found\n")

    def echo(self):
        self.send_response(101)
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", self.headers.get("Upgrade", "websocket"))
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            data = self.connection.recv(65536)
            if not data:
                return
            self.connection.sendall(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path == "/health/fail":
            HEALTHY.clear()
        elif self.path == "/health/ok":
            HEALTHY.set()
        else:
            return self.reply(404, "not found\n")
        self.reply(200, f"healthy={HEALTHY.is_set()} on {socket.gethostname()}\n")

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    # Stop cleanly on SIGTERM (what the platform sends when it retires a replica).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"hello listening on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
