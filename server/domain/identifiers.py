"""A caller's identifier (a merchant, an order, an idempotency key, a payee): 1 to 128
printable ASCII characters without spaces. One rule for the API's fields, the operator
commands, and what is sent to the payment gateway, which takes the same."""

from __future__ import annotations

import re

from server.domain.errors import FieldViolation

MAX_ID_LENGTH = 128
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


def identifier_problem(value: str, min_length: int = 1) -> str | None:
    """What is wrong with `value` as an identifier (of at least `min_length`
    characters), or None."""
    if not value:
        return "is required"
    if len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters"
    if not _PRINTABLE.match(value):
        return "must be printable ASCII without spaces"
    if len(value) < min_length:
        return f"must be at least {min_length} characters"
    return None


def identifier_violation(value: str, field: str) -> FieldViolation | None:
    problem = identifier_problem(value)
    return FieldViolation(field, problem) if problem else None
