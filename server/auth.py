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
     "public": ["grpc.health.v1.Health/Check"]}

Tokens are stored only as hashes; the tokens themselves live with their callers.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from server.domain.errors import CreditError

# Only the one-shot health check: Watch streams stay open and would let anyone hold
# server slots without an identity.
DEFAULT_PUBLIC = ("grpc.health.v1.Health/Check",)


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
        """Read and check the access file; anything not exactly of the documented shape
        is refused at start (a string where a list belongs would otherwise match `*`)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"ACCESS_FILE {path}: {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("callers", {}), dict):
            raise ValueError(f"ACCESS_FILE {path}: must be an object with a 'callers' object")
        callers = {name: _patterns(path, f"callers.{name}", methods)
                   for name, methods in data.get("callers", {}).items()}
        tokens = data.get("tokens", {})
        if not isinstance(tokens, dict):
            raise ValueError(f"ACCESS_FILE {path}: 'tokens' must be an object")
        for digest, caller in tokens.items():
            if not _HEX64.fullmatch(digest) or caller not in callers:
                raise ValueError(f"ACCESS_FILE {path}: token hashes must be lowercase sha256 hex naming a "
                                 "listed caller")
        public = _patterns(path, "public", data["public"]) if "public" in data else DEFAULT_PUBLIC
        return cls(callers, dict(tokens), public)

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


_HEX64 = re.compile(r"[0-9a-f]{64}")
_PATTERN = re.compile(r"\*|[A-Za-z0-9_.]+/(\*|[A-Za-z0-9_]+)")


def _patterns(path: Path, where: str, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and _PATTERN.fullmatch(p) for p in value):
        raise ValueError(f"ACCESS_FILE {path}: {where} must be a list of method patterns such as "
                         "'credit.v1.CheckoutService/*', 'credit.v1.CheckoutService/Authorize' or '*'")
    return tuple(value)


def _matches(method: str, patterns: tuple[str, ...]) -> bool:
    name = method.lstrip("/")
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def certificate_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The first DNS or URI subject alternative name; the common name only for a
    certificate with no subject alternative names at all. IP and email names are not
    callers."""
    auth = context.auth_context() or {}
    sans = [v.decode() if isinstance(v, bytes) else str(v) for v in auth.get("x509_subject_alternative_name", ())]
    for name in sans:
        if name and "@" not in name and not _is_ip(name):
            return name
    if sans:
        return None
    for value in auth.get("x509_common_name", ()):
        name = value.decode() if isinstance(value, bytes) else str(value)
        if name and not _is_ip(name):
            return name
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
