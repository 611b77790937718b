"""Quotes: the plans an account may take for an amount now, or the one reason it may
take none.

A quote offers exactly the plans that Authorize would approve (risk checks aside, since
they need the order's device and merchant history), so checkout never shows a plan that
is then declined. The checks run in Authorize's order (`authorizations.decide`), and
each reason answers one of its declines:

1. A CLOSED account takes no plan (ACCOUNT_CLOSED), nor does a FROZEN one
   (ACCOUNT_FROZEN).
2. No product fits the amount and the grade, or the method asked for (NO_PRODUCT;
   Authorize says TERM_NOT_OFFERED).
3. The amount is above what is available (INSUFFICIENT_AVAILABLE; Authorize says
   INSUFFICIENT_LIMIT). A plan the customer cannot afford now is not offered: checkout
   says "not enough credit" instead.

Otherwise every fitting plan is offered, by term then method, and no reason is given.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from server.domain.accounts import AccountStatus, CreditLine
from server.domain.pricing import Offer, ProductTable, RepaymentMethod


class UnavailableReason(enum.StrEnum):
    ACCOUNT_FROZEN = "ACCOUNT_FROZEN"
    ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
    INSUFFICIENT_AVAILABLE = "INSUFFICIENT_AVAILABLE"
    NO_PRODUCT = "NO_PRODUCT"


@dataclass(frozen=True)
class Offered:
    """The plans offered, by term then method; or none, with the reason and a readable
    explanation."""

    offers: tuple[Offer, ...]
    unavailable_reason: UnavailableReason | None = None
    message: str = ""


def offers(line: CreditLine, products: ProductTable, amount_minor: int, method: RepaymentMethod | None,
           now: datetime) -> Offered:
    """What the account may take for `amount_minor` now, of every method or of `method`."""
    if line.status is AccountStatus.CLOSED:
        return Offered((), UnavailableReason.ACCOUNT_CLOSED, "the account is closed")
    if line.status is AccountStatus.FROZEN:
        return Offered((), UnavailableReason.ACCOUNT_FROZEN, "the account is frozen")
    fitting = tuple(offer for offer in products.offers(amount_minor, line.risk_grade)
                    if method is None or offer.product.method is method)
    if not fitting:
        kind = f"{method} plan" if method is not None else "plan"
        return Offered((), UnavailableReason.NO_PRODUCT,
                       f"no {kind} is offered for {amount_minor} fen to grade {line.risk_grade}")
    available = line.available_minor(now)
    if amount_minor > available:
        return Offered((), UnavailableReason.INSUFFICIENT_AVAILABLE,
                       f"{amount_minor} fen asked, {available} fen available")
    return Offered(fitting)
