"""Opaque page tokens: the sort key of the last row shown, so pages are stable while
rows are added (keyset paging, never OFFSET)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from uuid import UUID

from server.domain.errors import InvalidArgument


def encode(values: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode(token: str, size: int) -> list[str]:
    """The values of a token this service issued; INVALID_ARGUMENT on `page_token` else."""
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        values = None
    if not isinstance(values, list) or len(values) != size or not all(isinstance(v, str) for v in values):
        raise InvalidArgument.of("page_token", "is not a token this service issued")
    return values


def decode_after(token: str) -> tuple[datetime, UUID] | None:
    """The (created_at, id) a keyset page resumes after; None for the first page."""
    if not token:
        return None
    created_at, row_id = decode(token, 2)
    try:
        return datetime.fromisoformat(created_at), UUID(row_id)
    except ValueError:
        raise InvalidArgument.of("page_token", "is not a token this service issued") from None


def encode_after(created_at: datetime, row_id: UUID) -> str:
    return encode([created_at.isoformat(), str(row_id)])


def decode_position(token: str) -> int:
    """The position (a row's number in an ordered series, such as a journal entry's
    sequence) a keyset page resumes after; 0 for the first page."""
    if not token:
        return 0
    (position,) = decode(token, 1)
    if not position.isdigit() or len(position) > 18:
        raise InvalidArgument.of("page_token", "is not a token this service issued")
    return int(position)


def encode_position(position: int) -> str:
    return encode([str(position)])
