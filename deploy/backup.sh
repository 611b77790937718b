#!/usr/bin/env bash
# Back up the credit database while the service keeps running: pg_dump reads every
# table in one repeatable-read snapshot, so the dump is one consistent state of the
# books even with writes going on. Custom format, for pg_restore (see restore.sh).
#
#   DATABASE_URL=postgresql://credit@db:5432/credit deploy/backup.sh credit.dump [pg_dump options]
#
# Settings:
#   DATABASE_URL   the database to back up (keep the password in PGPASSWORD or
#                  ~/.pgpass rather than in the URL, which shows in the process list)
#   PG_BIN         folder of pg_dump and pg_restore when they are not on PATH; they must
#                  be at least as new as the server
#   LOCK_WAIT_S    how long pg_dump waits for a table lock (a migration holding one)
#                  before it gives up; 60 unless set
#
# The dump is written beside OUTPUT and renamed into place only once pg_restore can read
# its table of contents, so a failed run never leaves a file that looks like a backup.
set -euo pipefail

if [[ $# -lt 1 || $1 == -* ]]; then
    echo "usage: DATABASE_URL=postgresql://... $0 OUTPUT_FILE [pg_dump options]" >&2
    exit 2
fi
if [[ -z ${DATABASE_URL:-} ]]; then
    echo "DATABASE_URL: set it to the database to back up" >&2
    exit 2
fi
output=$1
shift
bin=${PG_BIN:+$PG_BIN/}
partial="$output.partial"
trap 'rm -f -- "$partial"' EXIT

"${bin}pg_dump" --format=custom --no-password --lock-wait-timeout="${LOCK_WAIT_S:-60}s" \
    --dbname="$DATABASE_URL" --file="$partial" "$@"
# A dump that pg_restore cannot list is no backup.
"${bin}pg_restore" --list "$partial" >/dev/null
mv -f -- "$partial" "$output"
trap - EXIT
echo "backup written: $output ($(wc -c <"$output") bytes)"
