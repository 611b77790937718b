#!/usr/bin/env bash
# Restore a backup made by backup.sh into a NEW database, then check its books with
# `python -m server.invariants`. The restore drill is this script against a scratch
# database; a real recovery is the same, then pointing DATABASE_URL at the new database.
#
#   DATABASE_URL=postgresql://credit@db:5432/credit deploy/restore.sh credit.dump credit_restored
#
# Settings:
#   DATABASE_URL   a database on the server to restore to: the script connects there to
#                  create the new one, which gets the same URL with its own name
#   PG_BIN         folder of pg_restore and psql when they are not on PATH
#   PYTHON         the interpreter that has this package installed; `python` unless set
#
# The new database must not exist. Objects belong to the role that restores (owners
# and grants in the dump are skipped): grant the service's role its rights before
# pointing the service at the copy.
#
# Exit status: 0 restored and every rule of the books holds; 1 restored, but rules are
# broken (listed; the database is kept for inspection); 2 bad usage; 3 nothing restored
# (the database could not be created, or the restore failed and it was dropped).
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: DATABASE_URL=postgresql://... $0 DUMP_FILE NEW_DATABASE" >&2
    exit 2
fi
if [[ -z ${DATABASE_URL:-} ]]; then
    echo "DATABASE_URL: set it to a database on the server to restore to" >&2
    exit 2
fi
dump=$1
target=$2
if [[ ! -r $dump ]]; then
    echo "cannot read the dump $dump" >&2
    exit 2
fi
if [[ ! $target =~ ^[a-z_][a-z0-9_]{0,62}$ ]]; then
    echo "NEW_DATABASE must be lowercase letters, digits and _, at most 63, got '$target'" >&2
    exit 2
fi
bin=${PG_BIN:+$PG_BIN/}
python=${PYTHON:-python}
target_url=$("$python" -c '
import sys
from urllib.parse import urlsplit, urlunsplit
print(urlunsplit(urlsplit(sys.argv[1])._replace(path="/" + sys.argv[2])))' "$DATABASE_URL" "$target")

psql() { "${bin}psql" --no-psqlrc --no-password --quiet --set=ON_ERROR_STOP=1 "$@"; }

# template0: nothing added to template1 on this server may collide with the dump.
if ! psql --dbname="$DATABASE_URL" --command="CREATE DATABASE \"$target\" TEMPLATE template0"; then
    echo "cannot create the database $target (it must not exist yet)" >&2
    exit 3
fi
# One transaction: the new database holds all of the dump or nothing.
if ! "${bin}pg_restore" --no-password --exit-on-error --single-transaction --no-owner --no-privileges \
        --dbname="$target_url" "$dump"; then
    echo "restore failed: dropping the new database $target" >&2
    psql --dbname="$DATABASE_URL" --command="DROP DATABASE IF EXISTS \"$target\" WITH (FORCE)" || true
    exit 3
fi
echo "restored $dump into $target"

DATABASE_URL=$target_url "$python" -m server.invariants
