"""Who may call what. Callers are identified by their client certificate (mutual TLS:
the first DNS or URI subject alternative name, else the common name) or, as a second
option, by a bearer token in the `authorization` metadata. Each caller has a list of
methods it may call; `*` patterns match a whole service or everything.

    UNAUTHENTICATED     no identity, or a token nobody was given
    PERMISSION_DENIED   a known caller (or a certificate our CA signed for a name that
                        has no entry) asking for a method not on its list

The access file (ACCESS_FILE) is JSON:

    {"callers": {"order-service": ["credit.v1.CheckoutService/*"],
                 "operator": ["*"]},
     "tokens": {"<sha256 hex of the token>": "operator"},
     "public": ["grpc.health.v1.Health/*"]}

Tokens are stored only as hashes; the tokens themselves live with their callers.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from server.domain.errors import CreditError

DEFAULT_PUBLIC = ("grpc.health.v1.Health/*",)


class Unauthenticated(CreditError):
    code = "UNAUTHENTICATED"


class PermissionDenied(CreditError):
    code = "PERMISSION_DENIED"


@dataclass(frozen=True)
class AccessPolicy:
    callers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    token_hashes: dict[str, str] = field(default_factory=dict)
    public: tuple[str, ...] = DEFAULT_PUBLIC

    @classmethod
    def load(cls, path: Path) -> AccessPolicy:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"ACCESS_FILE {path}: {error}") from None
        callers = {name: tuple(methods) for name, methods in (data.get("callers") or {}).items()}
        tokens = dict(data.get("tokens") or {})
        for digest, caller in tokens.items():
            if len(digest) != 64 or caller not in callers:
                raise ValueError(f"ACCESS_FILE {path}: token hashes must be sha256 hex naming a listed caller")
        return cls(callers, tokens, tuple(data.get("public") or DEFAULT_PUBLIC))

    def is_public(self, method: str) -> bool:
        return _matches(method, self.public)

    def allows(self, caller: str, method: str) -> bool:
        return _matches(method, self.callers.get(caller, ()))

    def caller_for_token(self, token: str) -> str | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        for known, caller in self.token_hashes.items():
            if hmac.compare_digest(known, digest):
                return caller
        return None


def _matches(method: str, patterns: tuple[str, ...]) -> bool:
    name = method.lstrip("/")
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def certificate_identity(context: grpc.aio.ServicerContext) -> str | None:
    auth = context.auth_context() or {}
    for key in ("x509_subject_alternative_name", "x509_common_name"):
        for value in auth.get(key, ()):
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text and not text.replace(".", "").isdigit():  # an IP address is not a caller's name
                return text
    return None


def bearer_token(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            return value[7:].strip()
    return None


def authorize_call(policy: AccessPolicy, method: str, context: grpc.aio.ServicerContext) -> str:
    """The caller's name, or an error that becomes UNAUTHENTICATED / PERMISSION_DENIED."""
    if policy.is_public(method):
        return "public"
    caller = certificate_identity(context)
    if caller is None:
        token = bearer_token(context)
        if token is None:
            raise Unauthenticated("no client certificate and no bearer token")
        caller = policy.caller_for_token(token)
        if caller is None:
            raise Unauthenticated("the bearer token is not valid")
    if not policy.allows(caller, method):
        raise PermissionDenied(f"{caller} may not call {method.lstrip('/')}")
    return caller
