"""Which failures say "the database is away" (UNAVAILABLE, retry later), which are
conflicts (ABORTED, retry now), and which are bugs; and how a DATABASE_URL is shown."""

from __future__ import annotations

import asyncpg
import pytest

from server.admission import Admission, Bounds
from server.db.pool import database_location, masked_dsn
from server.interceptors import database_error_kind


@pytest.mark.parametrize("error", [
    FileNotFoundError(2, "No such file or directory"),  # the unix socket, mid-restart
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.CrashShutdownError("terminating connection because of crash of another server process"),
])
def test_a_database_that_is_away_is_unavailable(error):
    assert database_error_kind(error) == "unavailable"


@pytest.mark.parametrize("error", [asyncpg.SerializationError("x"), asyncpg.DeadlockDetectedError("x"),
                                   asyncpg.LockNotAvailableError("x")])
def test_conflicts_are_retried_at_once(error):
    assert database_error_kind(error) == "conflict"


@pytest.mark.parametrize("error", [TimeoutError(), asyncpg.QueryCanceledError("canceling statement due to "
                                                                               "statement timeout")])
def test_timeouts(error):
    assert database_error_kind(error) == "timeout"


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("x"), asyncpg.UniqueViolationError("x")])
def test_anything_else_is_not_the_databases_absence(error):
    assert database_error_kind(error) is None


def test_urls_are_shown_without_their_password():
    assert masked_dsn("postgresql://credit:s3cret@db.internal:5432/credit") == \
        "postgresql://credit:***@db.internal:5432/credit"
    assert masked_dsn("postgresql://postgres@/postgres?host=/run/pg") == "postgresql://postgres@/postgres?host=/run/pg"
    assert database_location("postgresql://credit:s3cret@db.internal:6432/credit") == "db.internal:6432/credit"
    assert database_location("postgresql://postgres@/books?host=/run/pg&port=5433") == "/run/pg:5433/books"


def test_admission_bounds_each_caller_connection_and_the_streams_apart():
    admission = Admission(Bounds(total=3, per_caller=2, per_connection=1, streams=1))
    assert admission.enter("a", "c1") is None and admission.enter("a", "c2") is None
    assert admission.enter("a", "c3") == "caller"
    assert admission.enter("b", "c1") == "connection"
    assert admission.enter("b", "c3") is None
    assert admission.enter("c", "c4") == "total"
    assert admission.enter("c", "c4", stream=True) is None  # streams have their own budget
    assert admission.enter("d", "c5", stream=True) == "streams"
    admission.leave("a", "c1")
    assert admission.enter("c", "c6") is None
    assert admission.calls == 3 and admission.streams == 1 and admission.held_by("a") == 1
