"""The email channel: reminders, notices of a failed auto-debit and statements rendered from templates (zh-CN and en,
plain text and HTML) and sent with aiosmtplib. 4xx replies and connection failures are retried with
backoff; 5xx replies are permanent."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import aiosmtplib
import jinja2
import structlog

from server.core.statements import StatementMail

log = structlog.get_logger(__name__)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


class Delivery(enum.StrEnum):
    SENT = "SENT"
    TEMPORARY_FAILURE = "TEMPORARY_FAILURE"
    PERMANENT_FAILURE = "PERMANENT_FAILURE"


@dataclass(frozen=True)
class SendResult:
    delivery: Delivery
    detail: str
    smtp_code: int | None = None


@dataclass(frozen=True)
class ReminderLine:
    """One loan's installment on the bill; amounts unpaid, in fen."""

    order_id: str
    sequence: int
    term_months: int
    principal_minor: int
    fee_minor: int
    penalty_minor: int
    owed_minor: int
    apr_bps: int


@dataclass(frozen=True)
class Reminder:
    """Everything a reminder of one bill says: its total and its lines; amounts in fen,
    formatted here."""

    to_address: str
    name: str
    locale: str
    kind: str
    message_id: str
    account_id: str
    due_date: str
    days_past_due: int
    principal_minor: int
    fee_minor: int
    penalty_minor: int
    owed_minor: int
    lines: tuple[ReminderLine, ...]
    grace_days: int
    penalty_rate_bps_per_day: int
    penalty_cap_bps: int


def yuan(minor: int) -> str:
    """Fen as yuan with two decimals and thousands separators, a minus sign before a
    negative amount."""
    if minor < 0:
        return "-" + yuan(-minor)
    return f"{minor // 100:,}.{minor % 100:02d}"


def percent(bps: int) -> str:
    return f"{bps / 100:.2f}".rstrip("0").rstrip(".") if bps % 100 else str(bps // 100)


def unsubscribe_url(domain: str, account_id: str, secret: str) -> str:
    token = hmac.new(secret.encode(), f"unsubscribe:{account_id}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"https://{domain}/reminders/unsubscribe?" + urlencode({"account": account_id, "token": token})


def build_message(reminder: Reminder, *, mail_from: str, domain: str, secret: str) -> EmailMessage:
    locale = _locale(reminder.locale)
    link = unsubscribe_url(domain, reminder.account_id, secret)
    context = {
        "kind": reminder.kind, "name": reminder.name, "due_date": reminder.due_date,
        "days_past_due": reminder.days_past_due, "amount": yuan(reminder.owed_minor),
        "principal": yuan(reminder.principal_minor), "fee": yuan(reminder.fee_minor),
        "penalty": yuan(reminder.penalty_minor),
        "lines": [{"order_id": line.order_id, "sequence": line.sequence, "term_months": line.term_months,
                   "amount": yuan(line.owed_minor), "principal": yuan(line.principal_minor),
                   "fee": yuan(line.fee_minor), "penalty": yuan(line.penalty_minor), "apr": percent(line.apr_bps)}
                  for line in reminder.lines],
        "grace_days": reminder.grace_days, "penalty_rate": percent(reminder.penalty_rate_bps_per_day),
        "penalty_cap": percent(reminder.penalty_cap_bps), "account_ref": reminder.account_id[:8].upper(),
        "unsubscribe_url": link,
    }
    message = _compose("reminder", locale, context, mail_from=mail_from, to_name=reminder.name,
                       to_address=reminder.to_address, message_id=reminder.message_id)
    return _unsubscribable(message, link, domain, reminder.account_id)


def _unsubscribable(message: EmailMessage, link: str, domain: str, account_id: str) -> EmailMessage:
    """RFC 8058 one-click unsubscribe, with a mailto fallback for clients without it."""
    message["List-Unsubscribe"] = f"<{link}>, <mailto:unsubscribe@{domain}?subject=unsubscribe%20{account_id}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return message


# Why an auto-debit failed, in plain words, by locale (the gateway's failure reasons).
FAILURE_WORDS = {
    "en": {"INSUFFICIENT_FUNDS": "there was not enough money on the card or account",
           "INSTRUMENT_INVALID": "the card or account can no longer be used (it may have expired or been closed)",
           "DECLINED": "your bank declined the payment"},
    "zh-CN": {"INSUFFICIENT_FUNDS": "银行卡或账户余额不足",
              "INSTRUMENT_INVALID": "银行卡或账户已失效（可能已过期或注销）",
              "DECLINED": "发卡银行拒绝了本次扣款"},
}


def failure_in_words(reason: str, locale: str) -> str:
    """A failure reason as the customer reads it; one we have no words for reads as declined."""
    words = FAILURE_WORDS[_locale(locale)]
    return words.get(reason, words["DECLINED"])


@dataclass(frozen=True)
class DebitFailure:
    """Everything the notice of a failed auto-debit says: what could not be taken, why,
    from which instrument (its last 4 characters), and what happens next. Times are the
    customer's local times; `next_try_at` is None when no automatic try is left."""

    to_address: str
    name: str
    locale: str
    message_id: str
    account_id: str
    due_date: str
    amount_minor: int
    owed_minor: int
    failure_reason: str
    token_last4: str
    failed_at: datetime
    next_try_at: datetime | None
    # The instrument the next try will use, when the customer bound another since.
    next_last4: str | None = None


def local_time(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M}"


def build_debit_failure_message(failure: DebitFailure, *, mail_from: str, domain: str, secret: str) -> EmailMessage:
    """A notice of a failed auto-debit: a contact about the bill like a reminder, so it
    carries the same unsubscribe headers."""
    locale = _locale(failure.locale)
    link = unsubscribe_url(domain, failure.account_id, secret)
    context = {
        "name": failure.name, "due_date": failure.due_date, "amount": yuan(failure.amount_minor),
        "owed": yuan(failure.owed_minor), "reason": failure_in_words(failure.failure_reason, locale),
        "last4": failure.token_last4, "failed_at": local_time(failure.failed_at),
        "next_try": local_time(failure.next_try_at) if failure.next_try_at else "",
        "next_last4": failure.next_last4 or "", "invalid": failure.failure_reason == "INSTRUMENT_INVALID",
        "account_ref": failure.account_id[:8].upper(), "unsubscribe_url": link,
    }
    message = _compose("debit_failed", locale, context, mail_from=mail_from, to_name=failure.name,
                       to_address=failure.to_address, message_id=failure.message_id)
    return _unsubscribable(message, link, domain, failure.account_id)


def _locale(locale: str) -> str:
    return locale if (TEMPLATES / locale).is_dir() else "en"


def _compose(template: str, locale: str, context: dict, *, mail_from: str, to_name: str, to_address: str,
             message_id: str) -> EmailMessage:
    """A message from the template's subject, plain text and HTML in `locale`."""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = formataddr((to_name, to_address))
    message["Subject"] = _environment.get_template(f"{locale}/{template}.subject.j2").render(context).strip()
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id
    message.set_content(_environment.get_template(f"{locale}/{template}.txt.j2").render(context))
    message.add_alternative(_environment.get_template(f"{locale}/{template}.html.j2").render(context), subtype="html")
    # After the content: setting it clears every Content-* header set before.
    message["Content-Language"] = locale
    return message


# What each kind of statement line is called, by locale.
LINE_LABELS = {
    "en": {"PURCHASE": "Purchase", "FEE": "Fees of the plan", "PENALTY": "Late penalty", "PAYMENT": "Payment",
           "REFUND": "Refund", "FEE_WAIVED": "Fees waived", "PENALTY_WAIVED": "Penalty waived",
           "WRITTEN_OFF": "Written off", "ADJUSTMENT": "Adjustment"},
    "zh-CN": {"PURCHASE": "消费", "FEE": "分期服务费", "PENALTY": "逾期违约金", "PAYMENT": "还款", "REFUND": "退款",
              "FEE_WAIVED": "服务费减免", "PENALTY_WAIVED": "违约金减免", "WRITTEN_OFF": "核销", "ADJUSTMENT": "调整"},
}


def _plan(locale: str, term_months: int, apr_bps: int) -> str:
    if not term_months:
        return ""
    if locale == "zh-CN":
        return f"{term_months} 期，年化利率 {percent(apr_bps)}%"
    return f"{term_months} months, APR {percent(apr_bps)} %"


def build_statement_message(mail: StatementMail, *, mail_from: str) -> EmailMessage:
    """A statement's email: a service message to the account holder, so it carries no
    unsubscribe header (opting out of reminders does not stop statements)."""
    locale = _locale(mail.locale)
    s = mail.statement
    k = s.sections
    zone = ZoneInfo(s.time_zone)
    context = {
        "name": mail.name, "account_ref": str(s.account_id)[:8].upper(),
        "statement_date": s.statement_date.isoformat(), "period_start": s.period_start.isoformat(),
        "period_last_day": (s.statement_date - timedelta(days=1)).isoformat(),
        "payment_due_date": s.payment_due_date.isoformat(), "amount_due": yuan(s.amount_due_minor),
        "opening": yuan(s.opening_minor), "purchases": yuan(k.purchases_minor), "fees": yuan(k.fees_minor),
        "penalties": yuan(k.penalties_minor), "payments": yuan(k.payments_minor), "refunds": yuan(k.refunds_minor),
        "waivers": yuan(k.waivers_minor), "written_off": yuan(k.written_off_minor),
        "adjustments": yuan(k.adjustments_minor), "closing": yuan(s.closing_minor),
        "credit_balance": yuan(s.owed.credit_balance_minor), "credit_limit": yuan(s.credit_limit_minor),
        "available": yuan(s.available_minor), "labels": LINE_LABELS[locale],
        "lines": [{"date": line.booked_at.astimezone(zone).date().isoformat(), "kind": line.kind.value,
                   "order_id": line.order_id, "plan": _plan(locale, line.term_months, line.apr_bps)
                   if line.kind.value == "PURCHASE" else "", "amount": yuan(line.amount_minor)}
                  for line in s.lines],
        "installments": [{"order_id": i.order_id, "sequence": i.sequence, "due_date": i.due_date.isoformat(),
                          "amount": yuan(i.owed_minor)} for i in s.installments],
    }
    return _compose("statement", locale, context, mail_from=mail_from, to_name=mail.name, to_address=mail.email,
                    message_id=mail.delivery.message_id)


class EmailChannel:
    def __init__(self, *, host: str, port: int, starttls: bool, username: str | None, password: str | None,
                 timeout_s: float, tries: int, retry_base_s: float, ca_file: str | None = None) -> None:
        self._host = host
        self._port = port
        self._starttls = starttls
        self._username = username
        self._password = password
        self._timeout_s = timeout_s
        self._tries = tries
        self._retry_base_s = retry_base_s
        self._ca_file = ca_file

    async def send(self, message: EmailMessage) -> SendResult:
        """Send, retrying 4xx replies and connection failures up to `tries` times with
        exponential backoff; a 5xx reply ends it at once."""
        result = SendResult(Delivery.TEMPORARY_FAILURE, "not tried")
        for attempt in range(1, self._tries + 1):
            result = await self._send_once(message)
            if result.delivery is not Delivery.TEMPORARY_FAILURE:
                return result
            log.warning("email_send_retrying", message_id=message["Message-ID"], attempt=attempt,
                        detail=result.detail)
            if attempt < self._tries:
                await asyncio.sleep(self._retry_base_s * 2 ** (attempt - 1))
        return result

    async def _send_once(self, message: EmailMessage) -> SendResult:
        try:
            # STARTTLS is asked for explicitly (never "if offered"), and certificates are
            # always checked: against SMTP_CA_FILE when given, else the system's roots.
            await aiosmtplib.send(
                message, hostname=self._host, port=self._port, start_tls=self._starttls, validate_certs=True,
                cert_bundle=self._ca_file, username=self._username, password=self._password,
                timeout=self._timeout_s)
        except aiosmtplib.SMTPAuthenticationError as error:
            # Our login was refused: a setting or the server, not this message. Every
            # reminder would fail the same way; they wait and are tried again later.
            log.error("smtp_login_refused", host=self._host, code=error.code, detail=error.message)
            return SendResult(Delivery.TEMPORARY_FAILURE, f"login refused: {error.code} {error.message}", error.code)
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [r.code for r in error.recipients]
            code = max(codes) if codes else 550
            return _by_code(code, "; ".join(r.message for r in error.recipients))
        except aiosmtplib.SMTPResponseException as error:
            return _by_code(error.code, error.message)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as error:
            # Could not connect, or the connection broke: worth another try.
            return SendResult(Delivery.TEMPORARY_FAILURE, f"{type(error).__name__}: {error}")
        return SendResult(Delivery.SENT, "accepted", 250)


def _by_code(code: int, text: str) -> SendResult:
    if 400 <= code < 500:
        return SendResult(Delivery.TEMPORARY_FAILURE, f"{code} {text}", code)
    return SendResult(Delivery.PERMANENT_FAILURE, f"{code} {text}", code)
