# Start script of a managed PostgreSQL streaming replica (a constant: only environment variables
# vary). On an empty volume it clones the primary with pg_basebackup as the `replicator` role
# (-R writes standby.signal and primary_conninfo), waiting for the primary to accept it; then,
# every start, it writes the platform's pg_hba.conf (PG_HBA) and runs postgres as a hot standby
# that follows the primary's WAL stream, with no password in its environment.
set -eu
export PATH="/usr/lib/postgresql/$PG_MAJOR/bin:$PATH"
: "${REPLICATION_PASSWORD:?}" "${PG_HBA:?}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  export PGPASSWORD="$REPLICATION_PASSWORD"
  until pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U replicator -D "$PGDATA.tmp" -R -X stream -c fast; do
    echo "paas: waiting for the primary at $PRIMARY_HOST"
    rm -rf "$PGDATA.tmp"
    sleep 2
  done
  chmod 700 "$PGDATA.tmp"
  mv "$PGDATA.tmp" "$PGDATA"
  echo "paas: cloned the primary into $PGDATA"
fi
printf '%s\n' "$PG_HBA" > "$PGDATA/pg_hba.conf.paas"
mv -f "$PGDATA/pg_hba.conf.paas" "$PGDATA/pg_hba.conf"
unset PGPASSWORD POSTGRES_PASSWORD SUPERUSER_PASSWORD REPLICATION_PASSWORD
exec postgres -D "$PGDATA" -c listen_addresses='*' -c max_connections="$MAX_CONNECTIONS" -c hot_standby=on
