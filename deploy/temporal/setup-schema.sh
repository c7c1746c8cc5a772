#!/bin/sh
# Temporal's two databases on PostgreSQL (run by temporalio/admin-tools before the server
# starts): created when absent, then brought to the schema version of this image with
# temporal-sql-tool. Safe to run again: an existing database is kept and only updated.
set -eu
: "${POSTGRES_SEEDS:?set POSTGRES_SEEDS}" "${POSTGRES_USER:?set POSTGRES_USER}"
SQL_PASSWORD="$(cat "${POSTGRES_PWD_FILE:?set POSTGRES_PWD_FILE}")"
export SQL_PASSWORD
schemas=/etc/temporal/schema/postgresql/v12

until nc -z -w 5 "$POSTGRES_SEEDS" "${DB_PORT:-5432}"; do
    echo "waiting for PostgreSQL at $POSTGRES_SEEDS:${DB_PORT:-5432}"
    sleep 2
done

for pair in temporal:temporal temporal_visibility:visibility; do
    db=${pair%%:*}
    schema=${pair#*:}
    set -- --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "${DB_PORT:-5432}" -u "$POSTGRES_USER" --db "$db"
    temporal-sql-tool "$@" create || echo "database $db exists: keeping it"
    temporal-sql-tool "$@" setup-schema -v 0.0
    temporal-sql-tool "$@" update-schema -d "$schemas/$schema/versioned"
done
echo "Temporal schema up to date"
