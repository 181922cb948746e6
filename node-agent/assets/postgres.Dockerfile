# The default image for managed PostgreSQL, built locally from Debian's packages (no registry).
# paas drives the binaries itself (initdb, postgres, pg_basebackup), so any image carrying them
# under /usr/lib/postgresql/<major>/bin works.
FROM debian:bookworm-slim
ARG PG_MAJOR=15
RUN mkdir -p /etc/postgresql-common \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" "postgresql-client-${PG_MAJOR}" \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data \
 && chown -R postgres:postgres /var/lib/postgresql
USER postgres
