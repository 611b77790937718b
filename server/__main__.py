"""python -m server: serve the credit API. With no DATABASE_URL, an embedded PostgreSQL
under VAR_DIR is started and stopped with the process."""

from __future__ import annotations

import sys

import uvloop

from server import contact_crypto
from server.app import serve
from server.config import Settings, SettingsError
from server.logging import configure_logging


def main() -> None:
    try:
        settings = Settings.from_env()
        contact_crypto.configure(contact_crypto.from_env())
    except (SettingsError, contact_crypto.ContactKeyError) as error:
        sys.exit(f"bad setting: {error}")
    configure_logging(settings.log_level)
    dsn = settings.database_url
    if dsn is None:
        from server.db.embedded import start_embedded_postgres

        dsn = start_embedded_postgres(settings.var_dir).get_uri()
    uvloop.run(serve(settings, dsn))


if __name__ == "__main__":
    main()
