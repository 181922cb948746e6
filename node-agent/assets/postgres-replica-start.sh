# Start script of a managed PostgreSQL streaming replica (a constant: only environment variables
# vary). On an empty volume it clones the primary with pg_basebackup (-R writes standby.signal
# and primary_conninfo), waiting for the primary to accept it; then it runs postgres as a hot
# standby that follows the primary's WAL stream.
set -eu
export PATH="/usr/lib/postgresql/$PG_MAJOR/bin:$PATH"
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
exec postgres -D "$PGDATA" -c listen_addresses='*' -c max_connections="$MAX_CONNECTIONS" -c hot_standby=on
