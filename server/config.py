"""Settings, read once at start from the environment. A bad value stops the process with
a message that names the variable."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from server.domain.accounts import DEFAULT_TEMPORARY_LIMIT_MAX_DAYS
from server.domain.billing import DEFAULT_PAYMENT_DUE_DAYS, MAX_PAYMENT_DUE_DAYS, MIN_PAYMENT_DUE_DAYS
from server.domain.pricing import DEFAULT_MAX_APR_BPS

MAX_SERVER_PROCESSES = 64


class SettingsError(ValueError):
    pass


def int_setting(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def address_setting(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(f"{name} must be HOST:PORT, got {value!r}")
    return value


def optional_address_setting(env: Mapping[str, str], name: str) -> str | None:
    return address_setting(env, name, "") if env.get(name) else None


def database_url_setting(env: Mapping[str, str]) -> str | None:
    url = env.get("DATABASE_URL") or None
    if url is not None and not url.startswith(("postgres://", "postgresql://")):
        raise SettingsError("DATABASE_URL must be a postgresql:// URL")
    return url


def log_level_setting(env: Mapping[str, str]) -> str:
    level = (env.get("LOG_LEVEL") or "info").lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise SettingsError(f"LOG_LEVEL must be debug, info, warning or error, got {level!r}")
    return level


def temporary_limit_max_days_setting(env: Mapping[str, str]) -> int:
    """TEMPORARY_LIMIT_MAX_DAYS: how far ahead a temporary raise may end, for
    GrantTemporaryLimit and for campaigns alike."""
    return int_setting(env, "TEMPORARY_LIMIT_MAX_DAYS", DEFAULT_TEMPORARY_LIMIT_MAX_DAYS, minimum=1, maximum=366)


def switch_setting(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or ("on" if default else "off")).lower()
    if raw not in {"on", "off"}:
        raise SettingsError(f"{name} must be on or off, got {raw!r}")
    return raw == "on"


def _is_loopback(host: str) -> bool:
    """Only a literal loopback address, or the name localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _file(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name) or None
    if value is None:
        return None
    if not Path(value).is_file():
        raise SettingsError(f"{name} must name a readable file, got {value!r}")
    return Path(value)


def _auth_settings(env: Mapping[str, str]) -> dict:
    """AUTH_MODE mtls (the default) needs TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE
    and ACCESS_FILE; GRPC_LISTEN_ADDR then requires a client certificate, and the
    optional GRPC_TOKEN_LISTEN_ADDR takes bearer tokens over TLS instead.
    insecure-local serves plaintext with no authentication, and only on a loopback
    address: it exists for a developer's machine."""
    mode = (env.get("AUTH_MODE") or "mtls").lower()
    if mode not in {"mtls", "insecure-local"}:
        raise SettingsError(f"AUTH_MODE must be mtls or insecure-local, got {mode!r}")
    files = {name.lower(): _file(env, name)
             for name in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "ACCESS_FILE")}
    if mode == "mtls":
        for name, value in files.items():
            if value is None:
                raise SettingsError(f"{name.upper()} is required with AUTH_MODE=mtls "
                                    "(or set AUTH_MODE=insecure-local on a developer's machine)")
    else:
        host = (env.get("GRPC_LISTEN_ADDR") or "127.0.0.1:50051").rpartition(":")[0]
        if not _is_loopback(host):
            raise SettingsError(f"AUTH_MODE=insecure-local serves without authentication and only on a loopback "
                                f"address; GRPC_LISTEN_ADDR host is {host!r}")
    token_address = address_setting(env, "GRPC_TOKEN_LISTEN_ADDR", "unused:0") if env.get(
        "GRPC_TOKEN_LISTEN_ADDR") else None
    if token_address and mode != "mtls":
        raise SettingsError("GRPC_TOKEN_LISTEN_ADDR needs AUTH_MODE=mtls: tokens only travel over TLS")
    return {"auth_mode": mode, "grpc_token_listen_addr": token_address, **files}


def _admission_settings(env: Mapping[str, str]) -> dict:
    """Bounds on what callers may hold: calls in progress in all, per caller and per
    connection, long-lived streams (health Watch, reflection) on a budget of their own,
    the time a request body may take to arrive, message sizes and connection lifetimes.
    Past a bound a call is refused at once with RESOURCE_EXHAUSTED; nothing queues."""
    total = int_setting(env, "MAX_CONCURRENT_RPCS", 1_000, minimum=1, maximum=100_000)
    per_caller = int_setting(env, "MAX_CALLS_PER_CALLER", max(1, total // 2), minimum=1, maximum=100_000)
    per_connection = int_setting(env, "MAX_CALLS_PER_CONNECTION", 500, minimum=1, maximum=100_000)
    body_ms = int_setting(env, "REQUEST_BODY_TIMEOUT_MS", 5_000, minimum=10, maximum=600_000)
    return {
        "max_concurrent_rpcs": total,
        "max_calls_per_caller": min(per_caller, total),
        "max_calls_per_connection": min(per_connection, total),
        "max_streams": int_setting(env, "MAX_STREAMS", 100, minimum=1, maximum=100_000),
        "request_body_timeout_s": body_ms / 1000,
        "max_message_bytes": int_setting(env, "MAX_MESSAGE_BYTES", 1 << 20, minimum=4096, maximum=64 << 20),
        "keepalive_time_s": int_setting(env, "GRPC_KEEPALIVE_TIME_S", 60, minimum=10, maximum=7200),
        "max_connection_idle_s": int_setting(env, "GRPC_MAX_CONNECTION_IDLE_S", 600, minimum=10, maximum=86_400),
        "max_connection_age_s": int_setting(env, "GRPC_MAX_CONNECTION_AGE_S", 3_600, minimum=10, maximum=86_400),
    }


class MtlsFiles(NamedTuple):
    """The files AUTH_MODE=mtls requires."""

    cert: Path
    key: Path
    client_ca: Path
    access: Path


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    grpc_listen_addr: str
    var_dir: Path
    hold_ttl_s: int
    hold_sweep_interval_s: int
    db_pool_min_size: int
    db_pool_max_size: int
    db_command_timeout_s: int
    shutdown_grace_s: int
    max_apr_bps: int
    temporary_limit_max_days: int
    payment_due_days: int
    risk_checks: bool
    auth_mode: str
    tls_cert_file: Path | None
    tls_key_file: Path | None
    tls_client_ca_file: Path | None
    access_file: Path | None
    grpc_token_listen_addr: str | None
    log_level: str
    server_processes: int
    health_listen_addr: str | None
    metrics_listen_addr: str | None
    metrics_book_interval_s: int
    db_connect_timeout_s: int
    max_concurrent_rpcs: int
    max_calls_per_caller: int
    max_calls_per_connection: int
    max_streams: int
    request_body_timeout_s: float
    max_message_bytes: int
    keepalive_time_s: int
    max_connection_idle_s: int
    max_connection_age_s: int
    # The insured share of charged-off principal (the bot books the claims): the
    # portfolio report and stress tests take it off the expected loss.
    insurance_share_bps: int = 0
    # The PaymentGatewayService that moves customers' and merchants' money
    # (docs/payments.md); None: no payments are made.
    payment_gateway_addr: str | None = None
    # How long a payout's call to the gateway may take before its outcome is unknown
    # (the payout is then PENDING, and the collections bot settles it).
    payment_gateway_timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        log_level = log_level_setting(env)
        database_url = database_url_setting(env)
        pool_min = int_setting(env, "DB_POOL_MIN_SIZE", 2, minimum=1, maximum=100)
        pool_max = int_setting(env, "DB_POOL_MAX_SIZE", 16, minimum=1, maximum=200)
        if pool_min > pool_max:
            raise SettingsError(f"DB_POOL_MIN_SIZE ({pool_min}) must not exceed DB_POOL_MAX_SIZE ({pool_max})")
        return cls(
            database_url=database_url,
            grpc_listen_addr=address_setting(env, "GRPC_LISTEN_ADDR", "127.0.0.1:50051"),
            var_dir=Path(env.get("VAR_DIR") or "var"),
            hold_ttl_s=int_setting(env, "HOLD_TTL_S", 1800, minimum=1, maximum=7 * 86400),
            hold_sweep_interval_s=int_setting(env, "HOLD_SWEEP_INTERVAL_S", 15, minimum=1, maximum=3600),
            db_pool_min_size=pool_min,
            db_pool_max_size=pool_max,
            db_command_timeout_s=int_setting(env, "DB_COMMAND_TIMEOUT_S", 15, minimum=1, maximum=600),
            shutdown_grace_s=int_setting(env, "SHUTDOWN_GRACE_S", 10, minimum=0, maximum=600),
            max_apr_bps=int_setting(env, "MAX_APR_BPS", DEFAULT_MAX_APR_BPS, minimum=0, maximum=100_000),
            temporary_limit_max_days=temporary_limit_max_days_setting(env),
            # New accounts' bills fall due this many days after each statement date.
            payment_due_days=int_setting(env, "PAYMENT_DUE_DAYS", DEFAULT_PAYMENT_DUE_DAYS,
                                         minimum=MIN_PAYMENT_DUE_DAYS, maximum=MAX_PAYMENT_DUE_DAYS),
            risk_checks=switch_setting(env, "RISK_CHECKS", True),
            log_level=log_level,
            # Processes serving one port (SO_REUSEPORT), each with its own pool of up to
            # DB_POOL_MAX_SIZE connections; see docs/scaling.md.
            server_processes=int_setting(env, "SERVER_PROCESSES", 1, minimum=1, maximum=MAX_SERVER_PROCESSES),
            # A plaintext port serving only grpc.health.v1.Health, for probes that have no
            # client certificate (kubelet, a load balancer); off unless set.
            health_listen_addr=optional_address_setting(env, "HEALTH_LISTEN_ADDR"),
            # Prometheus metrics over HTTP; off unless set.
            metrics_listen_addr=optional_address_setting(env, "METRICS_LISTEN_ADDR"),
            # How often the book's gauges (holds pending, loans by status) are read.
            metrics_book_interval_s=int_setting(env, "METRICS_BOOK_INTERVAL_S", 15, minimum=1, maximum=3600),
            db_connect_timeout_s=int_setting(env, "DB_CONNECT_TIMEOUT_S", 60, minimum=0, maximum=3600),
            insurance_share_bps=int_setting(env, "INSURANCE_SHARE_BPS", 0, minimum=0, maximum=10_000),
            payment_gateway_addr=optional_address_setting(env, "PAYMENT_GATEWAY_ADDR"),
            payment_gateway_timeout_s=float(int_setting(env, "PAYMENT_GATEWAY_TIMEOUT_MS", 10_000, minimum=100,
                                                        maximum=120_000)) / 1000,
            **_admission_settings(env),
            **_auth_settings(env),
        )

    def mtls_files(self) -> MtlsFiles | None:
        """The certificate, key, client CA and access files of AUTH_MODE=mtls, which
        requires them all; None in any other mode."""
        if self.auth_mode != "mtls":
            return None
        if (self.tls_cert_file is None or self.tls_key_file is None or self.tls_client_ca_file is None
                or self.access_file is None):
            raise SettingsError("AUTH_MODE=mtls needs TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE and ACCESS_FILE")
        return MtlsFiles(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file, self.access_file)


def command_settings(purpose: str) -> tuple[str, str]:
    """(DATABASE_URL, LOG_LEVEL) for an operator's command, or exit naming the setting."""
    try:
        database_url = database_url_setting(os.environ)
        log_level = log_level_setting(os.environ)
    except SettingsError as error:
        sys.exit(f"bad setting: {error}")
    if database_url is None:
        sys.exit(f"DATABASE_URL: set it to the database {purpose}")
    return database_url, log_level
