"""Reminder calls through the voice-gateway simulator over real gRPC: each persona ends
in the right outcome and the right change to the case, with the transcript stored;
calls obey the contact window and the caps; a dropped stream is one failure and one
retry, never a second promise."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from collections_bot.__main__ import build
from collections_bot.config import BotSettings
from collections_bot.voice_sim import Simulator, serve
from credit.v1 import collections_pb2
from server.db import collections as collection_rows
from tests.integration.test_collections import smtp  # noqa: F401  (the SMTP sink fixture)
from tests.support import buy, free_port

SHANGHAI = timezone(timedelta(hours=8))


def shanghai(month, day, hour=10, minute=0):
    return datetime(2027, month, day, hour, minute, tzinfo=SHANGHAI)


@pytest.fixture
async def gateway():
    simulator = Simulator({"+8613900000011": "drops_then_promises", "+8613900000012": "hangs_up"})
    server, port = await serve("127.0.0.1:0", simulator)
    yield simulator, port
    await server.stop(None)


@pytest.fixture
def voice_bot(pool, clock, smtp, gateway):  # noqa: F811
    _, smtp_port = smtp
    _, port = gateway
    settings = BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port),
                                     "SMTP_RETRY_BASE_S": "0.01", "VOICE_GATEWAY_ADDR": f"127.0.0.1:{port}",
                                     "VOICE_READ_TIMEOUT_S": "5"})
    return build(pool, settings, clock)


async def run(bot, clock, when):
    clock.set(when)
    return await bot.run()


async def calls(pool, account_id):
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT step_code, status, reason, outcome, tries, detail FROM contact_attempts "
                                "WHERE account_id = $1 AND channel = 'VOICE' ORDER BY created_at, step_code",
                                uuid.UUID(account_id))
    return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]


async def customer(api, phone):
    account = await api.open_account(limit_minor=1_000_000, phone=phone)
    loan = await buy(api, account.account_id, 300_000)
    return account, loan


async def case_of(api, account_id):
    return await api.collections.GetCase(collections_pb2.GetCaseRequest(account_id=account_id))


@pytest.mark.parametrize("phone, outcome", [
    ("+8613900000000", "PROMISE_TO_PAY"), ("+8613900000001", "PROMISE_TO_PAY"), ("+8613900000002", "REFUSED"),
    ("+8613900000003", "WRONG_PERSON"), ("+8613900000004", "ANSWERING_MACHINE"), ("+8613900000005", "NO_ANSWER"),
    ("+8613900000006", "NO_ANSWER"), ("+8613900000007", "CLAIMS_PAID"), ("+8613900000008", "DISPUTE"),
    ("+8613900000009", "REQUEST_AGENT"), ("+8613900000012", "REFUSED"),
])
async def test_each_persona_ends_in_its_outcome_with_a_stored_transcript(api, voice_bot, clock, pool, books,
                                                                          phone, outcome):
    account, loan = await customer(api, phone)
    await run(voice_bot, clock, shanghai(2, 15))
    [call] = await calls(pool, account.account_id)
    assert (call["step_code"], call["status"], call["outcome"]) == ("D0_VOICE", "SENT", outcome)
    transcript = call["detail"]["transcript"]
    assert transcript and transcript[0] == {"event": "CALL_STATE_RINGING"}
    said = " ".join(line["bot"] for line in transcript if "bot" in line)
    if outcome == "NO_ANSWER" and phone.endswith("5"):
        assert said == ""  # it rang out: nothing was said
    elif outcome == "ANSWERING_MACHINE":
        # A short message that names no amount and no date.
        # The name is stored masked, like every transcript.
        assert "[name]" in said and "Wang Fang" not in said and "1,018" not in said and "2027" not in said
    else:
        assert transcript[1] == {"event": "CALL_STATE_ANSWERED_HUMAN"}
        assert "录音" in transcript[2]["bot"]  # the recording notice comes first
        assert transcript[3]["prompt_id"] == "identity"

    case = await case_of(api, account.account_id)
    if outcome == "PROMISE_TO_PAY":
        expected = "2027-02-15" if phone.endswith("0") else "2027-02-18"
        assert case.active_promise.promised_date == expected
        assert case.active_promise.source == collections_pb2.PROMISE_SOURCE_VOICE
    else:
        assert not case.HasField("active_promise")
    assert case.needs_payment_check is (outcome == "CLAIMS_PAID")
    assert case.escalation_reason == {"DISPUTE": collections_pb2.ESCALATION_REASON_DISPUTE,
                                      "REQUEST_AGENT": collections_pb2.ESCALATION_REASON_AGENT_REQUESTED}.get(
        outcome, collections_pb2.ESCALATION_REASON_UNSPECIFIED)
    assert case.escalated is (outcome in ("DISPUTE", "REQUEST_AGENT"))
    assert case.contact_preferences.phone_blocked is (outcome == "WRONG_PERSON")
    await books()


async def test_nothing_about_the_debt_is_said_before_the_identity_is_confirmed(api, voice_bot, clock, pool):
    account, _ = await customer(api, "+8613900000003")  # a wrong person answers
    await run(voice_bot, clock, shanghai(2, 15))
    [call] = await calls(pool, account.account_id)
    said = [line["bot"] for line in call["detail"]["transcript"] if "bot" in line]
    assert not any("1018" in s.replace(",", "") or "逾期" in s or "到期" in s for s in said)


async def test_a_silent_callee_hears_the_question_again_a_bounded_number_of_times(api, voice_bot, clock, pool):
    account, _ = await customer(api, "+8613900000006")
    await run(voice_bot, clock, shanghai(2, 15))
    [call] = await calls(pool, account.account_id)
    asked = [line for line in call["detail"]["transcript"] if line.get("prompt_id") == "identity" and "bot" in line]
    assert len(asked) == 3


async def test_a_wrong_person_stops_calls_to_that_number(api, voice_bot, clock, pool, gateway):
    simulator, _ = gateway
    account, _ = await customer(api, "+8613900000003")
    await run(voice_bot, clock, shanghai(2, 15))
    await run(voice_bot, clock, shanghai(2, 18))
    assert simulator.calls["+8613900000003"] == 1
    later = (await calls(pool, account.account_id))[-1]
    assert (later["step_code"], later["status"], later["reason"]) == ("D+3_VOICE", "SUPPRESSED", "WRONG_NUMBER")


async def test_no_call_outside_the_window_in_the_customers_zone(api, voice_bot, clock, pool, gateway):
    simulator, _ = gateway
    account, _ = await customer(api, "+8613900000002")
    await run(voice_bot, clock, shanghai(2, 15, 7, 59))
    assert simulator.calls["+8613900000002"] == 0
    [call] = await calls(pool, account.account_id)
    assert (call["status"], call["reason"]) == ("DEFERRED", "OUTSIDE_CONTACT_WINDOW")
    await run(voice_bot, clock, shanghai(2, 15, 8, 0))
    assert simulator.calls["+8613900000002"] == 1
    # At 21:00 the window is closed again: no call.
    await run(voice_bot, clock, shanghai(2, 18, 21, 0))
    assert simulator.calls["+8613900000002"] == 1


async def test_two_loans_on_one_bill_get_one_call_per_step(api, voice_bot, clock, pool, gateway):
    simulator, _ = gateway
    account = await api.open_account(limit_minor=2_000_000, phone="+8613900000005")
    await buy(api, account.account_id, 300_000)
    await buy(api, account.account_id, 300_000)
    await run(voice_bot, clock, shanghai(2, 15))
    assert simulator.calls["+8613900000005"] == 1
    assert [(c["step_code"], c["status"]) for c in await calls(pool, account.account_id)] == [("D0_VOICE", "SENT")]
    await run(voice_bot, clock, shanghai(2, 18))  # D+3: again one call for the two loans
    assert simulator.calls["+8613900000005"] == 2


async def test_one_call_a_day_per_customer_across_bills(api, voice_bot, clock, pool, gateway):
    """A strategy that calls 28 days after a due date meets the next bill's due-date
    call on 15 March: one call that day, for the older bill; the newer bill's call waits
    and, the next day, gives way to its D+1 email."""
    simulator, _ = gateway
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO reminder_steps (step_code, offset_days, channel, template, escalates) "
                           "VALUES ('D+28_VOICE', 28, 'VOICE', 'overdue', false)")
    account = await api.open_account(limit_minor=2_000_000, phone="+8613900000005")
    await buy(api, account.account_id, 300_000)
    await run(voice_bot, clock, shanghai(3, 15))
    assert simulator.calls["+8613900000005"] == 1
    due = {(c["step_code"], c["status"], c["reason"]) for c in await calls(pool, account.account_id)
           if c["status"] != "SKIPPED"}
    assert due == {("D+28_VOICE", "SENT", None), ("D0_VOICE", "DEFERRED", "FREQUENCY_CAP")}
    await run(voice_bot, clock, shanghai(3, 16))
    assert simulator.calls["+8613900000005"] == 1
    assert {(c["step_code"], c["status"], c["reason"]) for c in await calls(pool, account.account_id)
            if c["step_code"] == "D0_VOICE"} == {("D0_VOICE", "SKIPPED", "SUPERSEDED")}


async def test_no_call_within_seven_days_after_a_call_that_reached_the_customer(api, voice_bot, clock, pool,
                                                                                 gateway):
    simulator, _ = gateway
    account, _ = await customer(api, "+8613900000002")  # refuses: reached
    await run(voice_bot, clock, shanghai(2, 15))
    await run(voice_bot, clock, shanghai(2, 18))  # D+3 voice
    assert simulator.calls["+8613900000002"] == 1
    d3 = next(c for c in await calls(pool, account.account_id) if c["step_code"] == "D+3_VOICE")
    assert (d3["status"], d3["reason"]) == ("DEFERRED", "FREQUENCY_CAP")
    await run(voice_bot, clock, shanghai(2, 22, 10, 1))  # D+7: seven days have passed
    assert simulator.calls["+8613900000002"] == 2


async def test_a_dropped_stream_is_one_failure_and_one_retry_not_a_second_promise(api, voice_bot, clock, pool,
                                                                                  gateway, books):
    simulator, _ = gateway
    account, _ = await customer(api, "+8613900000011")
    await run(voice_bot, clock, shanghai(2, 15))
    [call] = await calls(pool, account.account_id)
    assert (call["status"], call["reason"], call["tries"]) == ("PENDING", "CALL_FAILED", 1)
    assert len(call["detail"]["failures"]) == 1 and "media stream lost" in call["detail"]["failures"][0]["detail"]
    assert not (await case_of(api, account.account_id)).HasField("active_promise")

    await run(voice_bot, clock, shanghai(2, 15, 10, 5))  # before the retry is due: nothing
    assert simulator.calls["+8613900000011"] == 1
    await run(voice_bot, clock, shanghai(2, 15, 10, 11))
    [call] = await calls(pool, account.account_id)
    assert (call["status"], call["outcome"], call["tries"]) == ("SENT", "PROMISE_TO_PAY", 2)
    assert len(call["detail"]["failures"]) == 1
    async with pool.acquire() as conn:
        promises = await conn.fetchval("SELECT count(*) FROM promises WHERE account_id = $1",
                                       uuid.UUID(account.account_id))
    assert promises == 1
    await books()


async def test_a_call_reads_whole_through_the_api_with_its_transcript_masked(api, voice_bot, clock, gateway):
    """GetContactAttempt: the outcome, the promised date, the transcript of the call that
    reached the customer and of the one that broke before, none naming the customer."""
    import grpc

    account, _ = await customer(api, "+8613900000011")
    await run(voice_bot, clock, shanghai(2, 15))
    await run(voice_bot, clock, shanghai(2, 15, 10, 11))
    listed = await api.collections.ListContactAttempts(collections_pb2.ListContactAttemptsRequest(
        account_id=account.account_id))
    [voice] = [a for a in listed.attempts if a.channel == collections_pb2.CONTACT_CHANNEL_VOICE]
    assert not voice.transcript  # a list stays light; the transcript comes with the attempt
    call = await api.collections.GetContactAttempt(collections_pb2.GetContactAttemptRequest(
        attempt_id=voice.attempt_id))
    assert (call.status, call.outcome, call.tries) == (collections_pb2.CONTACT_ATTEMPT_STATUS_SENT,
                                                       collections_pb2.CONTACT_OUTCOME_PROMISE_TO_PAY, 2)
    assert call.promised_date and call.planned_for == "2027-02-15"
    speakers = {line.speaker for line in call.transcript}
    assert speakers == {collections_pb2.TranscriptLine.SPEAKER_CALL, collections_pb2.TranscriptLine.SPEAKER_BOT,
                        collections_pb2.TranscriptLine.SPEAKER_CALLEE}
    said = " ".join(line.text for line in call.transcript)
    assert "[name]" in said and "Wang Fang" not in said
    [failed] = call.failed_calls
    assert "media stream lost" in failed.detail and failed.at.seconds > 0
    assert "Wang Fang" not in " ".join(line.text for line in failed.transcript)

    for attempt_id, code in ((str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND),
                             ("not-an-id", grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await api.collections.GetContactAttempt(collections_pb2.GetContactAttemptRequest(attempt_id=attempt_id))
        assert error.value.code() == code and "attempt_id" in (error.value.details() or "")


async def test_a_call_left_pending_while_calls_were_away_is_skipped_not_made_days_late(api, voice_bot, clock,
                                                                                       gateway, pool):
    """A review planned the due-day call, then no bot could call for four days: when
    calls come back, the D0 call is superseded by the D+3 one, and only that is made."""
    simulator, _ = gateway
    account, _ = await customer(api, "+8613900000002")
    voice_bot_channels = voice_bot.channels
    await voice_bot._collections.review_due_accounts(pool, shanghai(2, 15), voice_bot_channels, batch_size=10)
    assert [(c["step_code"], c["status"]) for c in await calls(pool, account.account_id)] == [("D0_VOICE", "PENDING")]
    await run(voice_bot, clock, shanghai(2, 19))
    made = {c["step_code"]: (c["status"], c["reason"]) for c in await calls(pool, account.account_id)}
    assert made == {"D0_VOICE": ("SKIPPED", "SUPERSEDED"), "D+3_VOICE": ("SENT", None)}
    assert simulator.calls["+8613900000002"] == 1


async def test_a_gateway_that_is_down_fails_the_attempt_after_bounded_retries(api, pool, clock, smtp):  # noqa: F811
    _, smtp_port = smtp
    settings = BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port),
                                     "VOICE_GATEWAY_ADDR": f"127.0.0.1:{free_port()}", "VOICE_MAX_TRIES": "2",
                                     "VOICE_READ_TIMEOUT_S": "2"})
    bot = build(pool, settings, clock)
    account, _ = await customer(api, "+8613900000001")
    await run(bot, clock, shanghai(2, 15))
    await run(bot, clock, shanghai(2, 15, 10, 11))
    [call] = await calls(pool, account.account_id)
    assert (call["status"], call["reason"], call["tries"]) == ("FAILED", "CALL_FAILED", 2)
    assert len(call["detail"]["failures"]) == 2


class TakeOverDuringTheCall(Simulator):
    """The simulator, but while a call is placed another replica takes over every claimed
    call attempt, as it would once their leases ran out."""

    def __init__(self, pool, now: datetime) -> None:
        super().__init__()
        self.pool, self.now, self.owner = pool, now, uuid.uuid4()

    async def PlaceCall(self, request_iterator, context):
        later = self.now + timedelta(hours=1)
        async with self.pool.acquire() as conn:
            await collection_rows.claim_attempts(conn, "VOICE", self.now, lease_now=later,
                                                 lease_until=later + timedelta(minutes=5), owner=self.owner, limit=10)
        async for event in super().PlaceCall(request_iterator, context):
            yield event


async def test_a_call_whose_lease_was_taken_over_records_neither_outcome_nor_promise(api, pool, clock,
                                                                                     smtp):  # noqa: F811
    _, smtp_port = smtp
    simulator = TakeOverDuringTheCall(pool, shanghai(2, 15))
    server, port = await serve("127.0.0.1:0", simulator)
    try:
        settings = BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port),
                                         "VOICE_GATEWAY_ADDR": f"127.0.0.1:{port}", "VOICE_READ_TIMEOUT_S": "5"})
        account, _ = await customer(api, "+8613900000000")  # promises to pay
        report = await run(build(pool, settings, clock), clock, shanghai(2, 15))
    finally:
        await server.stop(None)
    assert simulator.calls["+8613900000000"] == 1
    assert report.lease_lost == 1 and not report.delivered
    [call] = await calls(pool, account.account_id)
    assert (call["status"], call["outcome"], call["detail"]) == ("SENDING", None, {})
    # The promise heard on the call is the new holder's to record, with its own call.
    assert not (await case_of(api, account.account_id)).HasField("active_promise")
