#!/bin/bash
# Creates or updates the pipeline's ClickHouse database and its two users.
#
# Mounted into /docker-entrypoint-initdb.d of clickhouse/clickhouse-server. The image's
# entrypoint runs it against a temporary server that listens on 127.0.0.1 only, as the
# admin user of CLICKHOUSE_USER / CLICKHOUSE_PASSWORD (CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT=1
# lets that user create users). docker-compose.yml sets CLICKHOUSE_ALWAYS_RUN_INITDB_SCRIPTS=1,
# so the script runs at every start and is idempotent: a password changed in .env takes
# effect on the next `docker compose up`.
#
#   pipeline user (CLICKHOUSE_PIPELINE_USER): writes; creates and alters tables in the
#       pipeline database (`llmops migrate` runs with it), nothing outside that database
#       except SQL functions (sketch_quantile, otlp_*), which ClickHouse keeps globally.
#   Grafana user  (CLICKHOUSE_GRAFANA_USER): readonly=1, SELECT on the pipeline database;
#       may still change max_execution_time, which the Grafana plugin's client sets on
#       every query (the constraint CHANGEABLE_IN_READONLY the plugin's docs ask for).
#
# The entrypoint *sources* a non-executable .sh file; everything runs in a subshell so
# that `set -e` or a failure here cannot change the entrypoint's own shell.
(
    set -euo pipefail

    db="${LLMOPS_CLICKHOUSE_DATABASE:-llmops}"
    writer="${CLICKHOUSE_PIPELINE_USER:?CLICKHOUSE_PIPELINE_USER is not set}"
    writer_password="${CLICKHOUSE_PIPELINE_PASSWORD:?CLICKHOUSE_PIPELINE_PASSWORD is not set}"
    reader="${CLICKHOUSE_GRAFANA_USER:?CLICKHOUSE_GRAFANA_USER is not set}"
    reader_password="${CLICKHOUSE_GRAFANA_PASSWORD:?CLICKHOUSE_GRAFANA_PASSWORD is not set}"

    # Names go into SQL unquoted, so only plain identifiers are accepted.
    for name in "$db" "$writer" "$reader"; do
        if [[ ! "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
            echo "10-llmops-users.sh: '$name' is not a plain identifier" >&2
            exit 1
        fi
    done

    # Passwords become SQL string literals: escape backslashes, then single quotes.
    quote() {
        local value="${1//\\/\\\\}"
        printf "'%s'" "${value//\'/\\\'}"
    }

    clickhouse client --host 127.0.0.1 \
        --user "${CLICKHOUSE_USER:-default}" --password "${CLICKHOUSE_PASSWORD:-}" \
        --multiquery <<SQL
CREATE DATABASE IF NOT EXISTS ${db};

CREATE SETTINGS PROFILE IF NOT EXISTS llmops_grafana_readonly
    SETTINGS readonly = 1, max_execution_time = 60 CHANGEABLE_IN_READONLY;
ALTER SETTINGS PROFILE llmops_grafana_readonly
    SETTINGS readonly = 1, max_execution_time = 60 CHANGEABLE_IN_READONLY;

CREATE USER IF NOT EXISTS ${writer} IDENTIFIED WITH sha256_password BY $(quote "$writer_password");
ALTER USER ${writer} IDENTIFIED WITH sha256_password BY $(quote "$writer_password");
GRANT SELECT, INSERT, ALTER, CREATE TABLE, CREATE VIEW, DROP TABLE, DROP VIEW, TRUNCATE, OPTIMIZE, SHOW TABLES
    ON ${db}.* TO ${writer};
GRANT CREATE DATABASE ON ${db}.* TO ${writer};
GRANT CREATE FUNCTION ON *.* TO ${writer};

CREATE USER IF NOT EXISTS ${reader} IDENTIFIED WITH sha256_password BY $(quote "$reader_password")
    SETTINGS PROFILE 'llmops_grafana_readonly';
ALTER USER ${reader} IDENTIFIED WITH sha256_password BY $(quote "$reader_password")
    SETTINGS PROFILE 'llmops_grafana_readonly';
GRANT SELECT, SHOW TABLES ON ${db}.* TO ${reader};
SQL
    echo "10-llmops-users.sh: database ${db}, users ${writer} (read/write) and ${reader} (read-only) are ready"
)
