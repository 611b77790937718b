"""The life of a contact attempt as pure rules: when a step is held back, what a failed
send leads to, how a transcript is kept; that the enums are the same in the domain and
the contract; and that the bot reaches the database only through the core."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credit.v1 import collections_pb2
from server.core.contact_attempts import masked_transcript, readable
from server.domain.calendar import latest_local_date, local_date
from server.domain.reminders import (
    DEFERRALS,
    SUPPRESSIONS,
    AttemptStatus,
    Channel,
    ContactFacts,
    ContactRules,
    Outcome,
    PastContact,
    Reason,
    RetryPolicy,
    after_failure,
    hold_back,
)
from server.services import collections as service

ROOT = Path(__file__).resolve().parents[2]
ZONE = "Asia/Shanghai"
# 10:00 in Shanghai: inside the contact window.
NOW = datetime(2027, 2, 15, 2, 0, tzinfo=UTC)
CLEAR = ContactFacts(owed_minor=101_800, promise_active=False, email_opt_out=False, voice_opt_out=False,
                     phone_blocked=False)
BOTH = frozenset(Channel)
RULES = ContactRules()


def held(channel=Channel.EMAIL, facts=CLEAR, now=NOW, channels=BOTH, history=()):
    return hold_back(channel, facts, now, ZONE, RULES, channels=channels, history=history)


def with_(**changes) -> ContactFacts:
    return ContactFacts(**{**CLEAR.__dict__, **changes})


def test_a_step_goes_out_when_nothing_holds_it_back():
    assert held(Channel.EMAIL) is None
    assert held(Channel.VOICE) is None


@pytest.mark.parametrize("channel, facts, expected", [
    (Channel.EMAIL, with_(owed_minor=0), Reason.PAID),
    (Channel.VOICE, with_(promise_active=True), Reason.PROMISE_ACTIVE),
    (Channel.EMAIL, with_(email_opt_out=True), Reason.OPTED_OUT),
    (Channel.VOICE, with_(voice_opt_out=True), Reason.OPTED_OUT),
    (Channel.VOICE, with_(phone_blocked=True), Reason.WRONG_NUMBER),
    (Channel.EMAIL, with_(has_email=False), Reason.NO_CONTACT_ADDRESS),
    (Channel.VOICE, with_(has_phone=False), Reason.NO_CONTACT_ADDRESS),
])
def test_what_suppresses_a_step_for_good(channel, facts, expected):
    assert held(channel, facts) == (AttemptStatus.SUPPRESSED, expected)
    assert expected in SUPPRESSIONS


def test_what_only_one_channel_cares_about_leaves_the_other_alone():
    assert held(Channel.EMAIL, with_(voice_opt_out=True, phone_blocked=True, has_phone=False)) is None
    assert held(Channel.VOICE, with_(email_opt_out=True, has_email=False)) is None


def test_a_channel_the_bot_cannot_use_defers_the_step_and_does_not_suppress_it():
    assert held(Channel.VOICE, channels=frozenset({Channel.EMAIL})) == (AttemptStatus.DEFERRED,
                                                                        Reason.CHANNEL_UNAVAILABLE)


def test_outside_the_contact_window_in_the_customers_zone_a_step_waits():
    late_evening = datetime(2027, 2, 15, 13, 30, tzinfo=UTC)  # 21:30 in Shanghai, 14:30 in London
    assert held(now=late_evening) == (AttemptStatus.DEFERRED, Reason.OUTSIDE_CONTACT_WINDOW)
    assert hold_back(Channel.EMAIL, CLEAR, late_evening, "Europe/London", RULES, channels=BOTH,
                     history=()) is None


def test_the_caps_are_checked_when_planning_and_not_again_when_sending():
    earlier = [PastContact(NOW - timedelta(hours=1), Channel.EMAIL), PastContact(NOW - timedelta(hours=2),
                                                                                 Channel.EMAIL)]
    assert held(history=earlier) == (AttemptStatus.DEFERRED, Reason.FREQUENCY_CAP)
    # At sending the attempt already holds its place under the caps.
    assert held(history=None) is None


def test_suppression_comes_before_deferral():
    """A customer who opted out is not merely deferred to the morning."""
    night = datetime(2027, 2, 15, 16, 0, tzinfo=UTC)
    assert held(facts=with_(email_opt_out=True), now=night) == (AttemptStatus.SUPPRESSED, Reason.OPTED_OUT)


@given(st.sampled_from(list(Channel)), st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans(),
       st.integers(0, 23), st.sets(st.sampled_from(list(Channel))))
def test_a_held_back_step_is_suppressed_or_deferred_with_a_reason_of_its_kind(
        channel, paid, promise, opted_out, blocked, caps_full, hour, channels):
    facts = with_(owed_minor=0 if paid else 1, promise_active=promise, email_opt_out=opted_out,
                  voice_opt_out=opted_out, phone_blocked=blocked)
    now = datetime(2027, 2, 15, hour, tzinfo=UTC)
    history = [PastContact(now - timedelta(minutes=m), channel) for m in range(1, 11)] if caps_full else []
    result = hold_back(channel, facts, now, ZONE, RULES, channels=frozenset(channels), history=history)
    if result is None:
        assert not (paid or promise or opted_out) and channel in channels
        return
    status, reason = result
    assert (status, reason in SUPPRESSIONS, reason in DEFERRALS) in {
        (AttemptStatus.SUPPRESSED, True, False), (AttemptStatus.DEFERRED, False, True)}
    if paid:
        assert reason is Reason.PAID


# -- failures ---------------------------------------------------------------------------------

EMAIL = RetryPolicy(max_tries=4, first_delay=timedelta(minutes=5), factor=2, max_growth=2)
VOICE = RetryPolicy(max_tries=3, first_delay=timedelta(minutes=10))


def test_a_permanent_email_failure_ends_the_attempt_at_once():
    failed = after_failure(Channel.EMAIL, 1, True, NOW, EMAIL)
    assert (failed.status, failed.reason, failed.outcome, failed.next_try_at) == (
        AttemptStatus.FAILED, Reason.SMTP_PERMANENT, Outcome.REJECTED, None)


def test_a_temporary_email_failure_backs_off_until_its_tries_are_spent():
    retries = [after_failure(Channel.EMAIL, tries, False, NOW, EMAIL).next_try_at for tries in (1, 2, 3)]
    assert retries == [NOW + timedelta(minutes=5), NOW + timedelta(minutes=10), NOW + timedelta(minutes=20)]
    assert all(after_failure(Channel.EMAIL, tries, False, NOW, EMAIL).status is AttemptStatus.PENDING
               for tries in (1, 2, 3))
    spent = after_failure(Channel.EMAIL, 4, False, NOW, EMAIL)
    assert (spent.status, spent.reason, spent.outcome) == (AttemptStatus.FAILED, Reason.SMTP_TEMPORARY_EXHAUSTED,
                                                           Outcome.UNDELIVERED)


def test_a_failed_call_is_tried_again_after_a_fixed_delay_then_given_up():
    retry = after_failure(Channel.VOICE, 1, False, NOW, VOICE)
    assert (retry.status, retry.reason, retry.next_try_at) == (AttemptStatus.PENDING, Reason.CALL_FAILED,
                                                               NOW + timedelta(minutes=10))
    assert after_failure(Channel.VOICE, 3, False, NOW, VOICE).status is AttemptStatus.FAILED


@given(st.integers(1, 40), st.integers(1, 3), st.integers(0, 8))
def test_a_retry_delay_never_shrinks_and_stops_growing(tries, factor, growth):
    policy = RetryPolicy(max_tries=100, first_delay=timedelta(minutes=5), factor=factor, max_growth=growth)
    assert policy.first_delay <= policy.delay(tries) <= policy.delay(tries + 1)
    assert policy.delay(tries) <= policy.first_delay * factor ** growth


# -- transcripts and time ---------------------------------------------------------------------

def test_a_transcript_is_kept_with_the_name_and_numbers_masked():
    transcript = [{"event": "CALL_STATE_ANSWERED"},
                  {"bot": "Am I speaking with Wang Fang?", "prompt_id": "identity"},
                  {"callee": "yes, this is wang fang, call me on +86 139 0000 0001", "prompt_id": "identity"}]
    masked = masked_transcript(transcript, "Wang Fang")
    assert masked[0] == {"event": "CALL_STATE_ANSWERED"}
    assert masked[1] == {"bot": "Am I speaking with [name]?", "prompt_id": "identity"}
    assert "wang fang" not in masked[2]["callee"].lower() and "0001" not in masked[2]["callee"]
    assert masked_transcript(transcript, " ")[1]["bot"] == "Am I speaking with Wang Fang?"


def test_an_attempt_stored_in_clear_reads_masked():
    """Rows stored before transcripts were masked, and an SMTP answer quoting the address."""
    import uuid
    from datetime import date

    from server.domain.reminders import Attempt

    stored = Attempt(
        attempt_id=uuid.uuid4(), account_id=uuid.uuid4(), loan_id=uuid.uuid4(), sequence=1,
        due_date=date(2027, 2, 15), step_code="D0_VOICE",
        channel=Channel.VOICE, status=AttemptStatus.SENT, reason=None, outcome=Outcome.NO_ANSWER, tries=2,
        planned_for=date(2027, 2, 15), message_id=None, next_try_at=None, created_at=NOW, updated_at=NOW,
        detail={"smtp": "550 5.1.1 <wang.fang@example.com>: no such user",
                "transcript": [{"bot": "Is this Wang Fang?", "prompt_id": "identity"}],
                "failures": [{"at": NOW.isoformat(), "detail": "lost",
                              "transcript": [{"callee": "13900000001", "prompt_id": "identity"}]}]})
    shown = readable(stored, "Wang Fang")
    assert "wang.fang" not in shown.detail["smtp"] and "[email]" in shown.detail["smtp"]
    assert shown.detail["transcript"][0]["bot"] == "Is this [name]?"
    assert shown.detail["failures"][0]["transcript"][0]["callee"] == "[phone]"
    assert shown.detail["failures"][0]["detail"] == "lost" and readable(shown, "Wang Fang") == shown


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
       st.sampled_from(sorted(available_timezones() - {"Factory", "localtime"})))
def test_no_zone_is_past_the_latest_local_date(now, zone):
    ZoneInfo(zone)
    assert local_date(now, zone) <= latest_local_date(now)


# -- one set of names, from the domain to the contract ---------------------------------------

@pytest.mark.parametrize("domain, mapping", [(Channel, service.CHANNELS), (AttemptStatus, service.ATTEMPT_STATUSES),
                                             (Reason, service.REASONS), (Outcome, service.OUTCOMES)])
def test_every_domain_value_has_its_proto_number_and_back(domain, mapping):
    assert set(mapping.values()) == set(domain)
    assert len(mapping) == len(domain)


def test_the_contact_attempt_has_no_string_status_left():
    fields = collections_pb2.ContactAttempt.DESCRIPTOR.fields_by_name
    for name in ("channel", "status", "reason", "outcome"):
        assert fields[name].enum_type is not None, name


# -- layers -----------------------------------------------------------------------------------

def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_bot_reaches_the_database_only_through_the_core():
    modules = sorted((ROOT / "collections_bot").rglob("*.py"))
    assert len(modules) > 5
    for path in modules:
        reaching = {name for name in _imports(path) if name == "server.db" or name.startswith("server.db.")}
        assert not reaching, f"{path.relative_to(ROOT)} imports {sorted(reaching)}"


SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b", re.DOTALL)


def _sql_outside_docstrings(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and SQL.search(node.value)]


def test_sql_lives_in_server_db_only():
    """The core, the servicers and the bot speak to PostgreSQL through server.db; the
    statements there are all prepared against the migrated schema by a test."""
    paths = [p for package in ("server/core", "server/services", "server/domain", "collections_bot")
             for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(paths) > 30
    found = {str(p.relative_to(ROOT)): lines for p in paths if (lines := _sql_outside_docstrings(p))}
    assert found == {}
