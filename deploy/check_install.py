"""Check that an installed copy of the package carries every file it reads at run time.

The image build runs this right after `pip install .` (outside the source tree), so a
file missing from the package data fails the build instead of the first start; the unit
tests run it against a wheel built the same way. Prints where the package was found.
"""

from __future__ import annotations

import importlib
import sys


def main() -> int:
    # Every module the two processes and the operators' commands start from, and the
    # generated protobuf code they import.
    for module in ("server.__main__", "server.app", "server.invariants", "server.rotate_contact_keys",
                   "server.db.migrate", "collections_bot.__main__", "credit.v1.checkout_pb2_grpc",
                   "credit.v1.voice_gateway_pb2_grpc"):
        importlib.import_module(module)

    from collections_bot.channels import email
    from collections_bot.voice import dialogue
    from server.db.migrate import load_migrations
    from server.domain import risk, scorecard

    problems = []
    if not load_migrations():
        problems.append("no migrations")
    for name, load in (("risk ruleset", risk.load), ("scorecard", scorecard.load)):
        try:
            load()
        except OSError as error:
            problems.append(f"{name}: {error}")
    for name, folder, pattern in (("email templates", email.TEMPLATES, "*/*.j2"),
                                  ("voice scripts", dialogue.SCRIPTS, "*.json")):
        if not any(folder.glob(pattern)):
            problems.append(f"{name}: nothing matches {folder / pattern}")
    for problem in problems:
        print(f"missing from the installed package: {problem}", file=sys.stderr)
    import server
    print(f"installed package at {server.__path__[0]}: {'incomplete' if problems else 'complete'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
