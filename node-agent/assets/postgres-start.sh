# Start script of a managed PostgreSQL server (a constant: only environment variables vary).
# First start on an empty volume: initdb, create the app's role and database; then run postgres.
set -eu
export PATH="/usr/lib/postgresql/$PG_MAJOR/bin:$PATH"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"
  printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  psql -v ON_ERROR_STOP=1 -U postgres -d postgres -v user="$POSTGRES_USER" -v pw="$POSTGRES_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"user";
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'pw';
SQL
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "paas: initialised a new database in $PGDATA"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c max_connections="$MAX_CONNECTIONS"
