"""python -m server.funding add bank-a --name "Bank A" --principal-share-bps 7000 \\
       --fee-share-bps 5000 --max-exposure-minor 100000000000 --grades A,B,C --terms 3,6,12
python -m server.funding list [--format table|json]
python -m server.funding update bank-a [--name ...] [--principal-share-bps N] [--fee-share-bps N]
       [--max-exposure-minor N] [--grades A,B] [--terms 3,6]
python -m server.funding deactivate bank-a        (and: activate bank-a)
python -m server.funding settle --date 2027-02-10 --out var/settlements [--partner bank-a]

Funding partners of co-lending. Every server reads them at start: a change of shares,
grades or terms reaches captures when the servers restart. The maximum exposure and
the active flag set the caps of the partner's exposure counters, which captures check
in the database: they take effect at once. A loan keeps the shares it was funded with.

`settle` writes a day's settlement file per partner (settlement-PARTNER-DATE.csv): what
the platform collected for it, what it lent, and the net to transfer; the collections
bot writes the same files each pass when SETTLEMENT_DIR is set."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg

from server import operator_command
from server.core import funding as co_lending
from server.core import settlements

DEFAULT_STRIPES = 8


def _letters(text: str) -> list[str]:
    return [g.strip().upper() for g in text.split(",") if g.strip()]


def _numbers(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("use month counts, e.g. 3,6,12") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server.funding", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add an active partner")
    add.add_argument("partner_id")
    add.add_argument("--name", required=True)
    add.add_argument("--principal-share-bps", type=int, required=True, help="at most 7000: the platform keeps 30 %%")
    add.add_argument("--fee-share-bps", type=int, required=True, help="its share of fee and penalty income")
    add.add_argument("--max-exposure-minor", type=int, required=True, help="its principal outstanding at most, fen")
    add.add_argument("--grades", type=_letters, required=True, help="grades it funds, e.g. A,B,C")
    add.add_argument("--terms", type=_numbers, required=True, help="terms it funds, e.g. 3,6,12")
    add.add_argument("--exposure-stripes", type=int, default=DEFAULT_STRIPES,
                     help=f"counter rows its exposure is spread over (default {DEFAULT_STRIPES}; fixed)")
    listing = commands.add_parser("list", help="every partner with its exposure")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    update = commands.add_parser("update", help="change a partner's settings")
    update.add_argument("partner_id")
    update.add_argument("--name")
    update.add_argument("--principal-share-bps", type=int)
    update.add_argument("--fee-share-bps", type=int)
    update.add_argument("--max-exposure-minor", type=int)
    update.add_argument("--grades", type=_letters)
    update.add_argument("--terms", type=_numbers)
    for name, text in (("deactivate", "fund nothing more, at once"), ("activate", "fund again")):
        commands.add_parser(name, help=text).add_argument("partner_id")
    settle = commands.add_parser("settle", help="write a day's settlement files")
    settle.add_argument("--date", type=date.fromisoformat, required=True,
                        help=f"the settlement day, YYYY-MM-DD in {settlements.SETTLEMENT_TIME_ZONE}")
    settle.add_argument("--out", type=Path, required=True, help="the folder to write the files in")
    settle.add_argument("--partner", help="one partner (default: every partner)")
    return parser


def _row(view: co_lending.PartnerView) -> dict[str, Any]:
    p = view.partner
    return {"partner_id": p.partner_id, "name": p.name, "active": p.active,
            "principal_share_bps": p.shares.principal_share_bps, "fee_share_bps": p.shares.fee_share_bps,
            "grades": sorted(g.value for g in p.grades), "terms": sorted(p.terms),
            "max_exposure_minor": p.max_exposure_minor, "exposure_minor": view.exposure_minor,
            "exposure_stripes": p.exposure_stripes}


def _table(rows: list[dict[str, Any]]) -> str:
    columns = ("partner_id", "name", "active", "principal_share_bps", "fee_share_bps", "grades", "terms",
               "max_exposure_minor", "exposure_minor")
    cells = [[",".join(map(str, v)) if isinstance(v, list) else str(v) for v in (r[c] for c in columns)]
             for r in rows]
    widths = [max([len(c)] + [len(row[n]) for row in cells]) for n, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


async def _run(args: argparse.Namespace, conn: asyncpg.Connection) -> str:
    now = datetime.now(UTC)
    if args.command == "add":
        await co_lending.add_partner(
            conn, partner_id=args.partner_id, name=args.name, principal_share_bps=args.principal_share_bps,
            fee_share_bps=args.fee_share_bps, max_exposure_minor=args.max_exposure_minor,
            grades=args.grades, terms=args.terms, exposure_stripes=args.exposure_stripes, now=now)
        return f"added {args.partner_id}"
    if args.command == "list":
        rows = [_row(v) for v in await co_lending.list_partners(conn)]
        return json.dumps(rows, indent=2) if args.format == "json" else _table(rows)
    if args.command == "settle":
        partners = [args.partner] if args.partner else [
            v.partner.partner_id for v in await co_lending.list_partners(conn)]
        lines = []
        for partner_id in partners:
            path = args.out / settlements.file_name(partner_id, args.date)
            result = await settlements.write_csv(conn, partner_id, args.date, path)
            lines.append(f"{path}: collected {result.collected_minor}, funded "
                         f"{result.funded_principal_minor}, net transfer {result.net_transfer_minor}")
        return "\n".join(lines) or "no partners"
    if args.command in ("deactivate", "activate"):
        await co_lending.update_partner(conn, args.partner_id, now, active=args.command == "activate")
        return f"{args.command}d {args.partner_id}"
    changes = {name: getattr(args, name) for name in (
        "name", "principal_share_bps", "fee_share_bps", "max_exposure_minor", "grades", "terms")
        if getattr(args, name) is not None}
    if not changes:
        raise SystemExit("update: give at least one setting to change")
    await co_lending.update_partner(conn, args.partner_id, now, **changes)
    return f"updated {args.partner_id}"


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    operator_command.run(args, "of the funding partners", lambda conn: _run(args, conn))


if __name__ == "__main__":
    main()
