"""CollectionsService: validate, call the core, convert."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from credit.v1 import collections_pb2, collections_pb2_grpc, common_pb2
from server import paging
from server.core.collections import CaseView, Collections
from server.core.loans import account_of_loan
from server.domain.cases import PromiseSource
from server.domain.errors import InvalidArgument
from server.domain.loans import Bucket
from server.domain.reminders import Attempt, AttemptStatus, Channel, Outcome, Reason
from server.services import convert
from server.services.fields import Fields
from server.services.transactions import Transactions

BUCKETS = convert.from_proto_enum(common_pb2.DelinquencyBucket, "DELINQUENCY_BUCKET_", Bucket)
# Every domain value has its proto number (a test checks both ways).
CHANNELS = convert.from_proto_enum(collections_pb2.ContactChannel, "CONTACT_CHANNEL_", Channel)
ATTEMPT_STATUSES = convert.from_proto_enum(collections_pb2.ContactAttemptStatus, "CONTACT_ATTEMPT_STATUS_",
                                           AttemptStatus)
REASONS = convert.from_proto_enum(collections_pb2.ContactAttemptReason, "CONTACT_ATTEMPT_REASON_", Reason)
OUTCOMES = convert.from_proto_enum(collections_pb2.ContactOutcome, "CONTACT_OUTCOME_", Outcome)
SPEAKERS = {"bot": collections_pb2.TranscriptLine.SPEAKER_BOT, "callee": collections_pb2.TranscriptLine.SPEAKER_CALLEE,
            "event": collections_pb2.TranscriptLine.SPEAKER_CALL}


def promise(row) -> collections_pb2.Promise:
    return collections_pb2.Promise(
        promise_id=str(row["promise_id"]), account_id=str(row["account_id"]),
        promised_date=row["promised_date"].isoformat(), amount_minor=row["amount_minor"],
        status=collections_pb2.PromiseStatus.Value("PROMISE_STATUS_" + row["status"]),
        source=convert.to_proto_enum(collections_pb2.PromiseSource, "PROMISE_SOURCE_", PromiseSource(row["source"])),
        created_at=convert.timestamp(row["created_at"]))


def preferences(account_id: uuid.UUID, values: tuple[bool, bool, bool]) -> collections_pb2.ContactPreferences:
    return collections_pb2.ContactPreferences(account_id=str(account_id), email_opt_out=values[0],
                                              voice_opt_out=values[1], phone_blocked=values[2])


def case(view: CaseView) -> collections_pb2.Case:
    return collections_pb2.Case(
        account_id=str(view.account_id),
        bucket=convert.to_proto_enum(common_pb2.DelinquencyBucket, "DELINQUENCY_BUCKET_", view.bucket),
        days_past_due=view.days_past_due, overdue_minor=view.overdue_minor,
        penalty_owed_minor=view.penalty_owed_minor, escalated=view.escalation is not None,
        escalation_reason=convert.to_proto_enum(collections_pb2.EscalationReason, "ESCALATION_REASON_",
                                                view.escalation.reason if view.escalation else None),
        escalation_step_code=(view.escalation.step_code or "") if view.escalation else "",
        needs_payment_check=view.needs_payment_check,
        active_promise=promise(view.promise) if view.promise else None,
        contact_preferences=preferences(view.account_id, view.preferences),
        updated_at=convert.timestamp(view.updated_at), as_of=convert.timestamp(view.as_of))


def transcript(lines: list[dict]) -> list[collections_pb2.TranscriptLine]:
    """A stored transcript (masked when it was stored) as lines of the API."""
    converted = []
    for line in lines:
        speaker = next((key for key in SPEAKERS if key in line), None)
        if speaker is not None:
            converted.append(collections_pb2.TranscriptLine(speaker=SPEAKERS[speaker], text=str(line[speaker]),
                                                            prompt_id=str(line.get("prompt_id", ""))))
    return converted


def attempt(found: Attempt, *, whole: bool = False) -> collections_pb2.ContactAttempt:
    """An attempt for the API; `whole` adds what only GetContactAttempt returns (a call's
    transcript and its failed calls)."""
    detail = found.detail
    message = collections_pb2.ContactAttempt(
        attempt_id=str(found.attempt_id), account_id=str(found.account_id),
        loan_id=str(found.loan_id) if found.loan_id else "", sequence=found.sequence or 0,
        due_date=found.due_date.isoformat(), step_code=found.step_code,
        channel=convert.to_proto_enum(collections_pb2.ContactChannel, "CONTACT_CHANNEL_", found.channel),
        status=convert.to_proto_enum(collections_pb2.ContactAttemptStatus, "CONTACT_ATTEMPT_STATUS_", found.status),
        reason=convert.to_proto_enum(collections_pb2.ContactAttemptReason, "CONTACT_ATTEMPT_REASON_", found.reason),
        outcome=convert.to_proto_enum(collections_pb2.ContactOutcome, "CONTACT_OUTCOME_", found.outcome),
        tries=found.tries, message_id=found.message_id or "", created_at=convert.timestamp(found.created_at),
        updated_at=convert.timestamp(found.updated_at), planned_for=found.planned_for.isoformat(),
        delivery_detail=str(detail.get("smtp") or ""), promised_date=str(detail.get("promised_date") or ""),
        next_try_at=convert.timestamp(found.next_try_at),
        kind=convert.to_proto_enum(collections_pb2.ContactAttemptKind, "CONTACT_ATTEMPT_KIND_", found.kind),
        payment_order_id=str(found.payment_order_id) if found.payment_order_id else "")
    if whole:
        message.transcript.extend(transcript(detail.get("transcript") or []))
        for failure in detail.get("failures") or []:
            at = datetime.fromisoformat(failure["at"]) if failure.get("at") else None
            message.failed_calls.append(collections_pb2.FailedCall(
                at=convert.timestamp(at), detail=str(failure.get("detail") or ""),
                transcript=transcript(failure.get("transcript") or [])))
    return message


class CollectionsServicer(collections_pb2_grpc.CollectionsServiceServicer):
    def __init__(self, transactions: Transactions, collections: Collections) -> None:
        self._tx = transactions
        self._collections = collections

    async def GetCase(self, request, context) -> collections_pb2.Case:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        f.done()

        async def get(conn):
            return case(await self._collections.case(conn, account_id))

        return await self._tx.read(get)

    async def ListCases(self, request, context) -> collections_pb2.ListCasesResponse:
        f = Fields()
        size = f.page_size(request.page_size)
        bucket = f.enum(request.bucket, "bucket", BUCKETS) if request.bucket else None
        f.done()
        after = uuid.UUID(int=0)
        if request.page_token:
            try:
                after = uuid.UUID(paging.decode(request.page_token, 1)[0])
            except ValueError:
                raise InvalidArgument.of("page_token", "is not a token this service issued") from None

        async def page(conn):
            views = await self._collections.cases(conn, bucket, after, size + 1)
            more = len(views) > size
            views = views[:size]
            return collections_pb2.ListCasesResponse(
                cases=[case(v) for v in views],
                next_page_token=paging.encode([str(views[-1].account_id)]) if more else "")

        return await self._tx.read(page)

    async def RecordPromiseToPay(self, request, context) -> collections_pb2.Promise:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        amount = f.amount(request.amount_minor, "amount_minor")
        promised = date.min
        try:
            promised = date.fromisoformat(request.promised_date)
        except ValueError:
            f.fail("promised_date", f"must be a date YYYY-MM-DD, got {request.promised_date[:32]!r}")
        f.idempotency_key(request.idempotency_key)
        f.done()

        async def record(conn):
            return promise(await self._collections.record_promise(conn, account_id, promised, amount,
                                                                        PromiseSource.API))

        return await self._tx.idempotent("RecordPromiseToPay", request, collections_pb2.Promise, record,
                                         account_id=account_id)

    async def SetContactPreferences(self, request, context) -> collections_pb2.ContactPreferences:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        f.idempotency_key(request.idempotency_key)
        f.done()

        async def save(conn):
            values = await self._collections.set_preferences(conn, account_id, request.email_opt_out,
                                                             request.voice_opt_out)
            return preferences(account_id, values)

        return await self._tx.idempotent("SetContactPreferences", request, collections_pb2.ContactPreferences, save,
                                         account_id=account_id)

    async def WaivePenalty(self, request, context) -> common_pb2.Loan:
        f = Fields()
        loan_id = f.uuid(request.loan_id, "loan_id")
        if request.sequence < 1:
            f.fail("sequence", "must be 1 or more")
        amount = f.amount(request.amount_minor, "amount_minor")
        reason = f.text(request.reason, "reason")
        f.idempotency_key(request.idempotency_key)
        f.done()

        async def waive(conn):
            return convert.loan(await self._collections.waive_penalty(conn, loan_id, request.sequence, amount,
                                                                      reason))

        return await self._tx.idempotent("WaivePenalty", request, common_pb2.Loan, waive,
                                         find_account=lambda conn: account_of_loan(conn, loan_id))

    async def ListContactAttempts(self, request, context) -> collections_pb2.ListContactAttemptsResponse:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        size = f.page_size(request.page_size)
        f.done()
        after = None
        if request.page_token:
            planned_for, step_code, attempt_id = paging.decode(request.page_token, 3)
            try:
                after = date.fromisoformat(planned_for), step_code, uuid.UUID(attempt_id)
            except ValueError:
                raise InvalidArgument.of("page_token", "is not a token this service issued") from None

        async def page(conn):
            found = await self._collections.attempts.page(conn, account_id, after, size + 1)
            more = len(found) > size
            found = found[:size]
            last = found[-1] if found else None
            token = paging.encode([last.planned_for.isoformat(), last.step_code, str(last.attempt_id)]) if (
                more and last) else ""
            return collections_pb2.ListContactAttemptsResponse(attempts=[attempt(a) for a in found],
                                                               next_page_token=token)

        return await self._tx.read(page)

    async def GetContactAttempt(self, request, context) -> collections_pb2.ContactAttempt:
        f = Fields()
        attempt_id = f.uuid(request.attempt_id, "attempt_id")
        f.done()

        async def get(conn):
            return attempt(await self._collections.attempts.get(conn, attempt_id), whole=True)

        return await self._tx.read(get)
