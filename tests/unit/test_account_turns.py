"""Calls on one account take turns within a process; other accounts do not wait."""

from __future__ import annotations

import asyncio
import uuid

from server.services.transactions import AccountTurns


async def test_calls_on_one_account_run_one_at_a_time_and_leave_nothing_behind():
    turns = AccountTurns()
    account = uuid.uuid4()
    inside = 0
    most = 0

    async def call():
        nonlocal inside, most
        async with turns.take(account):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    await asyncio.gather(*(call() for _ in range(20)))
    assert most == 1
    assert len(turns) == 0


async def test_other_accounts_do_not_wait_and_a_failure_gives_the_turn_back():
    turns = AccountTurns()
    busy, other = uuid.uuid4(), uuid.uuid4()
    release = asyncio.Event()

    async def hold():
        async with turns.take(busy):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    entered = False
    async with asyncio.timeout(1):  # queued behind `busy`, this would time out
        async with turns.take(other):
            entered = True
    assert entered
    try:
        async with turns.take(other):
            raise RuntimeError("the call failed")
    except RuntimeError:
        pass
    release.set()
    await holder
    assert len(turns) == 0
