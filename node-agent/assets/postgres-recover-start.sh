# Start script of a throwaway server for point-in-time recovery (a constant). The agent puts a
# base backup into $PGDATA, the archived WAL beside it and the recovery settings, then creates
# recover.ready; postgres then replays the WAL to the target and is promoted. The container has
# no network and postgres keeps no password in its environment.
set -eu
export PATH="/usr/lib/postgresql/$PG_MAJOR/bin:$PATH"
unset POSTGRES_PASSWORD SUPERUSER_PASSWORD REPLICATION_PASSWORD
until [ -f /var/lib/postgresql/recover.ready ]; do sleep 0.2; done
exec postgres -D "$PGDATA" -c listen_addresses='' -c archive_mode=off -c max_connections="$MAX_CONNECTIONS"
