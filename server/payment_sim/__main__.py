"""python -m server.payment_sim: the payment-gateway simulator (see its package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

import structlog

from server import payment_sim
from server.config import SettingsError, address_setting, int_setting
from server.logging import configure_logging
from server.payment_sim.book import BEHAVIOURS, Book
from server.payment_sim.service import serve
from server.payment_sim.state import StateFile

log = structlog.get_logger("payment_sim")


def parse_behaviours(text: str) -> dict[str, str]:
    """TOKEN=NAME pairs, comma-separated; exit naming a pair that is not one."""
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        target, _, name = item.partition("=")
        if not target or name not in BEHAVIOURS:
            raise SystemExit(f"behaviour {item!r}: give TOKEN=NAME with NAME one of {', '.join(sorted(BEHAVIOURS))}")
        pairs[target] = name
    return pairs


async def _main(address: str, book: Book, state_file: Path | None) -> None:
    state = StateFile(state_file, book) if state_file is not None else None
    restored = state.load() if state is not None else 0
    if state is not None:
        state.watch()
    server, port = await serve(address, book)
    log.info("payment_sim_started", address=f"{address.rpartition(':')[0]}:{port}", payments_restored=restored,
             state_file=str(state_file) if state_file else None)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(2)
    book.close()
    if state is not None:
        state.write()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m server.payment_sim", description=payment_sim.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default=None, help="HOST:PORT (default PAYMENT_GATEWAY_ADDR or 127.0.0.1:50071)")
    parser.add_argument("--behaviour", action="append", default=[], help="TOKEN=NAME, ahead of the last digit")
    parser.add_argument("--delay-ms", type=int, default=None,
                        help="how long late results take (default PAYMENT_SIM_DELAY_MS or 2000)")
    parser.add_argument("--state-file", default=os.environ.get("PAYMENT_SIM_STATE_FILE") or None,
                        help="keep the payments in this JSON file across restarts (default: in memory only)")
    args = parser.parse_args()
    try:
        address = args.listen or address_setting(os.environ, "PAYMENT_GATEWAY_ADDR", "127.0.0.1:50071")
        delay_ms = args.delay_ms if args.delay_ms is not None else int_setting(
            os.environ, "PAYMENT_SIM_DELAY_MS", 2000, minimum=0, maximum=600_000)
    except SettingsError as error:
        raise SystemExit(f"bad setting: {error}") from None
    if not 0 <= delay_ms <= 600_000:
        raise SystemExit(f"--delay-ms must be between 0 and 600000, got {delay_ms}")
    configure_logging(os.environ.get("LOG_LEVEL") or "info")
    behaviours = parse_behaviours(os.environ.get("PAYMENT_SIM_BEHAVIOURS", "") + "," + ",".join(args.behaviour))
    state_file = Path(args.state_file) if args.state_file else None
    asyncio.run(_main(address, Book(behaviours, delay_s=delay_ms / 1000), state_file))


if __name__ == "__main__":
    main()
