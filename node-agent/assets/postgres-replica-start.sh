# Start script of a managed PostgreSQL streaming replica (a constant: only environment variables
# vary). On an empty volume it clones the primary with pg_basebackup as the `replicator` role,
# waiting for the primary to accept it, and makes the copy a standby that follows the primary
# (PRIMARY_CONNINFO) with the password in a file only the server reads; the agent keeps that
# file and primary_conninfo current afterwards. Every start: the platform's pg_hba.conf
# (PG_HBA), then postgres as a hot standby, with no password in its environment.
set -eu
export PATH="/usr/lib/postgresql/$PG_MAJOR/bin:$PATH"
: "${REPLICATION_PASSWORD:?}" "${PG_HBA:?}" "${PRIMARY_CONNINFO:?}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  export PGPASSWORD="$REPLICATION_PASSWORD"
  until pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U replicator -D "$PGDATA.tmp" -X stream -c fast; do
    echo "paas: waiting for the primary at $PRIMARY_HOST"
    rm -rf "$PGDATA.tmp"
    sleep 2
  done
  # All of it before the copy becomes $PGDATA: a copy without standby.signal would start as a
  # second primary.
  (umask 077 && printf '*:*:*:replicator:%s\n' "$REPLICATION_PASSWORD" > "$PGDATA.tmp/replicator.pgpass")
  printf "primary_conninfo = '%s'\n" "$PRIMARY_CONNINFO" >> "$PGDATA.tmp/postgresql.auto.conf"
  touch "$PGDATA.tmp/standby.signal"
  # The primary's archive spool is the primary's to ship.
  rm -rf "$PGDATA.tmp/pg_paas_archive"
  chmod 700 "$PGDATA.tmp"
  sync
  mv "$PGDATA.tmp" "$PGDATA"
  echo "paas: cloned the primary into $PGDATA"
fi
printf '%s\n' "$PG_HBA" > "$PGDATA/pg_hba.conf.paas"
mv -f "$PGDATA/pg_hba.conf.paas" "$PGDATA/pg_hba.conf"
unset PGPASSWORD POSTGRES_PASSWORD SUPERUSER_PASSWORD REPLICATION_PASSWORD
# A primary that stops answering (a dead node, a cut network) is noticed within seconds, so the
# replica reports it no longer streams before the control plane decides on a failover.
exec postgres -D "$PGDATA" -c listen_addresses='*' -c max_connections="$MAX_CONNECTIONS" -c hot_standby=on \
  -c wal_receiver_timeout=5s
