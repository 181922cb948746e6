"""hello: the example app for paas. Serves a greeting on $PORT (set by the platform)."""
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))


def message():
    with open(os.path.join(HERE, "message.txt"), encoding="utf-8") as f:
        return f.read().strip()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok\n"
        else:
            body = f"{message()}\nserved by {socket.gethostname()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

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
