"""The use cases: each runs inside a transaction its caller opened, reads and locks rows
through server.db, decides with server.domain, and writes the outcome."""
