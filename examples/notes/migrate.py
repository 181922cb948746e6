"""Schema migration for notes, run by paas as the release command."""
import os

import psycopg2

with psycopg2.connect(os.environ["DATABASE_URL"]) as conn, conn.cursor() as cur:
    cur.execute(
        "CREATE TABLE IF NOT EXISTS notes ("
        " id SERIAL PRIMARY KEY,"
        " body TEXT NOT NULL,"
        " created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
print("notes: schema is up to date", flush=True)
