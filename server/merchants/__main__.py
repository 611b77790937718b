"""python -m server.merchants register school-2041 --category EDUCATION
python -m server.merchants category school-2041
python -m server.merchants payee school-2041 school-2041-icbc-0
python -m server.merchants pay-again school-2041 --date 2027-02-10
python -m server.merchants release school-2041 --date 2027-02-10
python -m server.merchants statement --date 2027-02-10 --out var/settlements/merchants [--merchant school-2041]

The merchant registry and merchants' settlement days. A merchant's category sets the
fee the platform keeps when it settles the merchant's day (MERCHANT_FEE_BPS, the
product table in server/domain/pricing.py); a merchant never registered is GENERAL.

`payee` names where a registered merchant is paid at the payment gateway (by default
its own id). `pay-again` asks once more for a day whose payment FAILED (after the
payee was mended, say), under a new key, to the payee named now; the collections bot's
payments sweep sends it. `release` lets the sweep send a day held because it was settled
before payments were sent (check first that it was not paid by other means).

`statement` writes a day's file per merchant with a capture or refund that day
(merchant-settlement-MERCHANT-DATE.csv): every capture and refund, the fee, and the
day's net. It reads the books and changes nothing."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg

from server import operator_command
from server.core import merchant_payments, merchant_settlements
from server.core.settlements import SETTLEMENT_TIME_ZONE
from server.domain.pricing import MerchantCategory, merchant_fee_bps


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server.merchants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    register = commands.add_parser("register", help="name a merchant's category (again: change it)")
    register.add_argument("merchant_id")
    register.add_argument("--category", type=str.upper, choices=[c.value for c in MerchantCategory], required=True)
    commands.add_parser("category", help="a merchant's category, fee and payee").add_argument("merchant_id")
    payee = commands.add_parser("payee", help="name where a registered merchant is paid at the gateway")
    payee.add_argument("merchant_id")
    payee.add_argument("payee_id")
    again = commands.add_parser("pay-again", help="ask again for a merchant-day whose payment FAILED")
    again.add_argument("merchant_id")
    again.add_argument("--date", type=date.fromisoformat, required=True,
                       help=f"the settlement day, YYYY-MM-DD in {SETTLEMENT_TIME_ZONE}")
    held = commands.add_parser("release", help="let the bot pay a day held since before payments were sent")
    held.add_argument("merchant_id")
    held.add_argument("--date", type=date.fromisoformat, required=True,
                      help=f"the settlement day, YYYY-MM-DD in {SETTLEMENT_TIME_ZONE}")
    statement = commands.add_parser("statement", help="write a day's merchant settlement files")
    statement.add_argument("--date", type=date.fromisoformat, required=True,
                           help=f"the settlement day, YYYY-MM-DD in {SETTLEMENT_TIME_ZONE}")
    statement.add_argument("--out", type=Path, required=True, help="the folder to write the files in")
    statement.add_argument("--merchant", help="one merchant (default: every merchant with activity that day)")
    return parser


async def _run(args: argparse.Namespace, conn: asyncpg.Connection) -> str:
    if args.command == "register":
        category = MerchantCategory(args.category)
        await merchant_settlements.register_merchant(conn, args.merchant_id, category, datetime.now(UTC))
        return f"registered {args.merchant_id} as {category.value}"
    if args.command == "category":
        category = await merchant_settlements.category(conn, args.merchant_id)
        payee = await merchant_settlements.payee(conn, args.merchant_id)
        return f"{args.merchant_id} {category.value} {merchant_fee_bps(category)} bps, paid to {payee}"
    if args.command == "payee":
        await merchant_settlements.set_payee(conn, args.merchant_id, args.payee_id, datetime.now(UTC))
        return f"{args.merchant_id} is paid to {args.payee_id}"
    if args.command == "release":
        row = await merchant_settlements.release(conn, args.merchant_id, args.date)
        return (f"{args.merchant_id} {args.date.isoformat()}: {row['net_minor']} released, to be paid to "
                f"{row['payee_id']} as payment {row['payment_order_id']}")
    if args.command == "pay-again":
        row = await merchant_payments.pay_again(conn, args.merchant_id, args.date, datetime.now(UTC))
        return (f"{args.merchant_id} {args.date.isoformat()}: {row['net_minor']} asked again to {row['payee_id']} "
                f"as payment {row['payment_order_id']} (attempt {row['payment_attempts']})")
    merchants = [args.merchant] if args.merchant else await merchant_settlements.merchants_of_day(conn, args.date)
    lines = []
    for merchant_id in merchants:
        path = args.out / merchant_settlements.file_name(merchant_id, args.date)
        day = (await merchant_settlements.write_csv(conn, merchant_id, args.date, path)).settlement
        lines.append(f"{path}: captured {day.captured_minor}, refunded {day.refunded_minor}, "
                     f"fee {day.fee_minor}, net {day.net_minor}")
    return "\n".join(lines) or "no merchant captured or refunded that day"


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    operator_command.run(args, "of the merchants", lambda conn: _run(args, conn))


if __name__ == "__main__":
    main()
