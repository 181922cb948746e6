# Start script of a managed PostgreSQL server (a constant: only environment variables vary).
# First start on an empty volume: initdb (the `postgres` superuser with its own password), the
# app's role (no superuser, no CREATEDB/CREATEROLE) owning its database, and the `replicator`
# role with its own password. Every start: the platform's pg_hba.conf (PG_HBA), then postgres,
# which keeps none of the passwords in its environment.
set -eu
export PATH="/usr/lib/postgresql/$PG_MAJOR/bin:$PATH"
: "${SUPERUSER_PASSWORD:?}" "${REPLICATION_PASSWORD:?}" "${POSTGRES_PASSWORD:?}" "${PG_HBA:?}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"
  printf '%s' "$SUPERUSER_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" --auth-local=trust --auth-host=reject --encoding=UTF8 >/dev/null
  rm -f "$pwfile"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  # Passwords come from the environment (\getenv), never from a command line.
  psql -X -q -v ON_ERROR_STOP=1 -U postgres -d postgres -v user="$POSTGRES_USER" -v db="$POSTGRES_DB" <<'SQL'
\getenv pw POSTGRES_PASSWORD
\getenv rpw REPLICATION_PASSWORD
CREATE ROLE :"user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"user";
CREATE ROLE replicator LOGIN REPLICATION NOINHERIT PASSWORD :'rpw';
SQL
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "paas: initialised a new database in $PGDATA"
fi
printf '%s\n' "$PG_HBA" > "$PGDATA/pg_hba.conf.paas"
mv -f "$PGDATA/pg_hba.conf.paas" "$PGDATA/pg_hba.conf"
if [ -f "$PGDATA/standby.signal" ]; then
  # A replica's data directory starting as the primary (a switchover): recovery replays the
  # WAL it received, finds nothing more (no archive here), and ends on a new timeline.
  rm -f "$PGDATA/standby.signal"
  touch "$PGDATA/recovery.signal"
  echo "paas: promoting the replica's data directory to the primary"
fi
unset POSTGRES_PASSWORD SUPERUSER_PASSWORD REPLICATION_PASSWORD
# A replica that stops answering is dropped within seconds (and keepalives flow every 2.5 s).
set -- -c listen_addresses='*' -c max_connections="$MAX_CONNECTIONS" -c wal_sender_timeout=5s
if [ -f "$PGDATA/recovery.signal" ]; then
  set -- "$@" -c restore_command=false
fi
if [ "${ARCHIVE_TIMEOUT:-0}" -gt 0 ]; then
  # Continuous archiving: each finished WAL segment is gzipped into a spool in the data
  # directory (new segments are zero-filled, not recycled, so a forced switch compresses to
  # little), made durable, and the agent ships the spool to the control plane. A full spool
  # fails the command, so PostgreSQL keeps the WAL and retries instead of losing it.
  mkdir -p "$PGDATA/pg_paas_archive"
  set -- "$@" -c archive_mode=on -c archive_timeout="$ARCHIVE_TIMEOUT" -c wal_recycle=off \
    -c 'archive_command=a=pg_paas_archive; [ "$(ls $a | wc -l)" -lt 256 ] && gzip -1 -c %p > $a/%f.gz.part && sync $a/%f.gz.part && mv $a/%f.gz.part $a/%f.gz && sync $a'
fi
exec postgres -D "$PGDATA" "$@"
