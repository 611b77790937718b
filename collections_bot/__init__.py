"""The collections daemon: ageing, penalties and reminders over email and voice.

It reuses the server's core (server.domain, server.db) and runs beside the server as
`python -m collections_bot`.
"""
