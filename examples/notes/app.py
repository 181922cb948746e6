"""notes: stores short notes in PostgreSQL (DATABASE_URL, set by `paas db create`).

GET / lists the count and the latest notes; POST /notes stores the request body as a note.
"""
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from psycopg2.pool import ThreadedConnectionPool

# psycopg2's pool raises "connection pool exhausted" when every connection is busy; the
# semaphore makes extra requests wait their turn instead. Size it under the database's
# max_connections (`paas db info` shows both) divided by the app's replicas.
POOL_SIZE = int(os.environ.get("DB_POOL_SIZE", "20"))
POOL = ThreadedConnectionPool(1, POOL_SIZE, os.environ["DATABASE_URL"])
SLOTS = threading.BoundedSemaphore(POOL_SIZE)


def query(sql, args=(), fetch=True):
    with SLOTS:
        conn = POOL.getconn()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if fetch else None
        finally:
            POOL.putconn(conn)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def reply(self, status, obj):
        body = (json.dumps(obj) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            query("SELECT 1")
            return self.reply(200, {"ok": True})
        if self.path == "/":
            count = query("SELECT count(*) FROM notes")[0][0]
            latest = [r[0] for r in query("SELECT body FROM notes ORDER BY id DESC LIMIT 5")]
            return self.reply(200, {"count": count, "latest": latest})
        self.reply(404, {"error": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace").strip()
        if self.path != "/notes" or not body:
            return self.reply(400, {"error": "POST /notes with the note as the body"})
        query("INSERT INTO notes (body) VALUES (%s)", (body,), fetch=False)
        self.reply(201, {"stored": body})

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()


def main():
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("notes listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
