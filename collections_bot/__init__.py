"""The collections daemon: ageing, penalties and reminders over email and voice.

It runs beside the server as `python -m collections_bot` and does the I/O of
collections (rendering and sending email, holding calls); the rules and every write
are the server's core (server.core.collections, server.core.contact_attempts). It
never reaches server.db itself.
"""
