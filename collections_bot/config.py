"""The bot's settings, read once at start from the environment; a bad value stops the
process with a message that names it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from server.config import (
    SettingsError,
    address_setting,
    database_url_setting,
    int_setting,
    log_level_setting,
    optional_address_setting,
    switch_setting,
)
from server.core.collections import CollectionsPolicy
from server.domain import auto_debit
from server.domain.penalties import PenaltyPolicy
from server.domain.reminders import EMAIL_RETRY, VOICE_RETRY, FrequencyCaps


@dataclass(frozen=True)
class BotSettings:
    database_url: str | None
    var_dir: Path
    interval_s: int
    stop_timeout_s: int
    batch_size: int
    smtp_host: str
    smtp_port: int
    smtp_starttls: bool
    smtp_username: str | None
    smtp_password: str | None
    smtp_ca_file: str | None
    smtp_timeout_s: int
    smtp_tries_per_pass: int
    smtp_retry_base_s: float
    smtp_max_tries: int
    mail_from: str
    unsubscribe_secret: str
    lease_s: int
    voice_gateway_addr: str | None
    limit_review: bool
    # Where each pass writes funding partners' daily settlement files; None: not written.
    settlement_dir: Path | None
    metrics_listen_addr: str | None
    db_connect_timeout_s: int
    voice_caller_id: str
    voice_call_timeout_s: int
    voice_read_timeout_s: int
    voice_max_tries: int
    policy: CollectionsPolicy
    log_level: str
    # The PaymentGatewayService that moves customers' money (docs/payments.md); None: none.
    payment_gateway_addr: str | None = None
    # A payment order still REQUESTED this long after it was made (or last asked about)
    # is looked up at the gateway by the payments task.
    payment_reconcile_after_s: int = 60
    # How long the payments task waits for the gateway's answer to a call; past it the
    # outcome is unknown and a later sweep looks the payment up.
    payment_gateway_timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BotSettings:
        env = os.environ if env is None else env
        database_url = database_url_setting(env)
        # on/off like every other switch; true/false as the first version took it.
        starttls = {"on": "true", "off": "false"}.get(raw := (env.get("SMTP_STARTTLS") or "false").lower(), raw)
        if starttls not in {"true", "false"}:
            raise SettingsError(f"SMTP_STARTTLS must be on or off, got {raw!r}")
        retry_base = env.get("SMTP_RETRY_BASE_S") or "1"
        try:
            retry_base_s = float(retry_base)
        except ValueError:
            raise SettingsError(f"SMTP_RETRY_BASE_S must be a number, got {retry_base!r}") from None
        if not 0 <= retry_base_s <= 60:
            raise SettingsError("SMTP_RETRY_BASE_S must be between 0 and 60")
        log_level = log_level_setting(env)
        if (env.get("SMTP_USERNAME") or None) and not starttls == "true":
            raise SettingsError("SMTP_USERNAME needs SMTP_STARTTLS=on: a password is never sent in clear")
        mail_from = env.get("MAIL_FROM") or "Credit Reminders <reminders@credit.example>"
        if "@" not in mail_from:
            raise SettingsError("MAIL_FROM must contain an email address")
        smtp_max_tries = int_setting(env, "SMTP_MAX_TRIES", EMAIL_RETRY.max_tries, minimum=1, maximum=100)
        voice_max_tries = int_setting(env, "VOICE_MAX_TRIES", VOICE_RETRY.max_tries, minimum=1, maximum=20)
        # The local hour from which an account is auto-debited on a due date (docs/payments.md).
        auto_debit_hour = int_setting(env, "AUTO_DEBIT_HOUR", auto_debit.DEFAULT_MORNING_HOUR, minimum=0, maximum=23)
        return cls(
            database_url=database_url,
            var_dir=Path(env.get("VAR_DIR") or "var"),
            interval_s=int_setting(env, "COLLECTIONS_INTERVAL_S", 60, minimum=1, maximum=86_400),
            stop_timeout_s=int_setting(env, "COLLECTIONS_STOP_TIMEOUT_S", 20, minimum=1, maximum=600),
            batch_size=int_setting(env, "COLLECTIONS_BATCH_SIZE", 200, minimum=1, maximum=10_000),
            smtp_host=env.get("SMTP_HOST") or "127.0.0.1",
            smtp_port=int_setting(env, "SMTP_PORT", 2525, minimum=1, maximum=65_535),
            smtp_starttls=starttls == "true",
            smtp_username=env.get("SMTP_USERNAME") or None,
            smtp_password=env.get("SMTP_PASSWORD") or None,
            smtp_ca_file=_existing_file(env, "SMTP_CA_FILE"),
            smtp_timeout_s=int_setting(env, "SMTP_TIMEOUT_S", 30, minimum=1, maximum=600),
            smtp_tries_per_pass=int_setting(env, "SMTP_TRIES_PER_PASS", 3, minimum=1, maximum=10),
            smtp_retry_base_s=retry_base_s,
            smtp_max_tries=smtp_max_tries,
            mail_from=mail_from,
            unsubscribe_secret=env.get("UNSUBSCRIBE_SECRET") or "dev-only-unsubscribe-secret",
            lease_s=int_setting(env, "COLLECTIONS_LEASE_S", 120, minimum=5, maximum=3600),
            limit_review=switch_setting(env, "LIMIT_REVIEW", False),
            settlement_dir=Path(env["SETTLEMENT_DIR"]) if env.get("SETTLEMENT_DIR") else None,
            metrics_listen_addr=optional_address_setting(env, "METRICS_LISTEN_ADDR"),
            db_connect_timeout_s=int_setting(env, "DB_CONNECT_TIMEOUT_S", 60, minimum=0, maximum=3600),
            voice_gateway_addr=(address_setting(env, "VOICE_GATEWAY_ADDR", "unused:0")
                                if env.get("VOICE_GATEWAY_ADDR") else None),
            voice_caller_id=env.get("VOICE_CALLER_ID") or "+864008008888",
            voice_call_timeout_s=int_setting(env, "VOICE_CALL_TIMEOUT_S", 180, minimum=5, maximum=1800),
            voice_read_timeout_s=int_setting(env, "VOICE_READ_TIMEOUT_S", 30, minimum=1, maximum=300),
            voice_max_tries=voice_max_tries,
            policy=CollectionsPolicy(
                penalty=PenaltyPolicy(
                    grace_days=int_setting(env, "PENALTY_GRACE_DAYS", 3, minimum=0, maximum=60),
                    rate_bps_per_day=int_setting(env, "PENALTY_RATE_BPS_PER_DAY", 5, minimum=0, maximum=100),
                    min_minor_per_day=int_setting(env, "PENALTY_MIN_MINOR_PER_DAY", 1, minimum=0, maximum=10_000),
                    cap_bps=int_setting(env, "PENALTY_CAP_BPS", 2_500, minimum=0, maximum=10_000),
                ),
                charge_off_days=int_setting(env, "CHARGE_OFF_DAYS", 180, minimum=30, maximum=3650),
                caps=FrequencyCaps(
                    email_per_day=int_setting(env, "EMAIL_MAX_PER_DAY", 2, minimum=1, maximum=50),
                    calls_per_day=int_setting(env, "CALLS_MAX_PER_DAY", 1, minimum=1, maximum=10),
                    calls_per_7_days=int_setting(env, "CALLS_MAX_PER_7_DAYS", 7, minimum=1, maximum=70),
                    quiet_days_after_reached_call=int_setting(env, "CALLS_QUIET_DAYS_AFTER_REACHED", 7, minimum=0,
                                                       maximum=30),
                ),
                mail_domain=env.get("MAIL_DOMAIN") or "credit.example",
                insurance_share_bps=int_setting(env, "INSURANCE_SHARE_BPS", 0, minimum=0, maximum=10_000),
                email_retry=replace(EMAIL_RETRY, max_tries=smtp_max_tries),
                voice_retry=replace(VOICE_RETRY, max_tries=voice_max_tries),
                auto_debit_hour=auto_debit_hour,
            ),
            log_level=log_level,
            payment_gateway_addr=optional_address_setting(env, "PAYMENT_GATEWAY_ADDR"),
            payment_reconcile_after_s=int_setting(env, "PAYMENT_RECONCILE_AFTER_S", 60, minimum=1, maximum=86_400),
            payment_gateway_timeout_s=int_setting(env, "PAYMENT_GATEWAY_TIMEOUT_MS", 10_000, minimum=100,
                                                  maximum=600_000) / 1000,
        )


def _existing_file(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name) or None
    if value is not None and not Path(value).is_file():
        raise SettingsError(f"{name} must name a readable file, got {value!r}")
    return value

