"""CreditLineService: validate, call the core, convert."""

from __future__ import annotations

from credit.v1 import common_pb2, credit_line_pb2, credit_line_pb2_grpc
from server.core.accounts import (
    AdjustLimit,
    ChangeStatus,
    CreditLines,
    GrantTemporaryLimit,
    OpenAccount,
    SetStatementDay,
)
from server.core.views import Contact
from server.domain.accounts import account_id_of_customer
from server.services import convert
from server.services.fields import Fields
from server.services.transactions import Transactions

Account = credit_line_pb2.Account


class CreditLineServicer(credit_line_pb2_grpc.CreditLineServiceServicer):
    def __init__(self, transactions: Transactions, credit_lines: CreditLines) -> None:
        self._tx = transactions
        self._lines = credit_lines

    async def OpenAccount(self, request, context) -> Account:
        f = Fields()
        contact = request.contact
        customer_id = f.identifier(request.customer_id, "customer_id")
        command = OpenAccount(
            account_id=account_id_of_customer(customer_id),
            customer_id=customer_id,
            contact=Contact(
                name=f.text(contact.name, "contact.name", max_length=200),
                email=f.email(contact.email, "contact.email"),
                phone=f.phone(contact.phone, "contact.phone"),
                locale=f.locale(contact.locale, "contact.locale"),
                time_zone=f.time_zone(contact.time_zone, "contact.time_zone"),
            ),
            statement_day=f.statement_day(request.statement_day, allow_default=True),
        )
        f.idempotency_key(request.idempotency_key)
        f.done()
        return await self._tx.idempotent(
            "OpenAccount", request, Account,
            lambda conn: self._account(self._lines.open(conn, command)), account_id=command.account_id)

    async def GetAccount(self, request, context) -> Account:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        f.done()
        return await self._tx.read(lambda conn: self._account(self._lines.get(conn, account_id)))

    async def AssessCredit(self, request, context) -> credit_line_pb2.AssessCreditResponse:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        characteristics = {}
        if len(request.characteristics) > 64:
            f.fail("characteristics", "has more entries than any model uses")
        for name, value in request.characteristics.items():
            characteristics[f.text(name, "characteristics", max_length=100)] = f.text(
                value, f"characteristics[{name[:100]}]", max_length=200)
        f.idempotency_key(request.idempotency_key)
        f.done()

        async def assess(conn):
            assessment, account = await self._lines.assess(conn, account_id, characteristics)
            return credit_line_pb2.AssessCreditResponse(
                score=assessment.score,
                grade=convert.to_proto_enum(common_pb2.RiskGrade, "RISK_GRADE_", assessment.grade),
                credit_limit_minor=assessment.credit_limit_minor, model_version=assessment.model_version,
                reasons=[credit_line_pb2.ReasonCode(code=r.code, description=r.description,
                                                    points_lost=r.points_lost) for r in assessment.reasons],
                account=convert.account(account))

        return await self._tx.idempotent("AssessCredit", request, credit_line_pb2.AssessCreditResponse, assess,
                                         account_id=account_id)

    async def AdjustLimit(self, request, context) -> Account:
        f = Fields()
        command = AdjustLimit(
            account_id=f.uuid(request.account_id, "account_id"),
            credit_limit_minor=f.amount(request.credit_limit_minor, "credit_limit_minor", allow_zero=True),
            reason=f.text(request.reason, "reason"),
            risk_grade=f.enum(request.risk_grade, "risk_grade", convert.GRADES) if request.risk_grade else None,
        )
        f.idempotency_key(request.idempotency_key)
        f.done()
        return await self._tx.idempotent(
            "AdjustLimit", request, Account,
            lambda conn: self._account(self._lines.adjust_limit(conn, command)), account_id=command.account_id)

    async def GrantTemporaryLimit(self, request, context) -> Account:
        f = Fields()
        command = GrantTemporaryLimit(
            account_id=f.uuid(request.account_id, "account_id"),
            temporary_limit_minor=f.amount(request.temporary_limit_minor, "temporary_limit_minor",
                                           allow_zero=True),
            expires_at=f.timestamp(request, "expires_at", "expires_at"),
            reason=f.text(request.reason, "reason"),
        )
        f.idempotency_key(request.idempotency_key)
        f.done()
        return await self._tx.idempotent(
            "GrantTemporaryLimit", request, Account,
            lambda conn: self._account(self._lines.grant_temporary_limit(conn, command)),
            account_id=command.account_id)

    async def SetStatementDay(self, request, context) -> Account:
        f = Fields()
        command = SetStatementDay(account_id=f.uuid(request.account_id, "account_id"),
                                  statement_day=f.statement_day(request.statement_day))
        f.idempotency_key(request.idempotency_key)
        f.done()
        return await self._tx.idempotent(
            "SetStatementDay", request, Account,
            lambda conn: self._account(self._lines.set_statement_day(conn, command)), account_id=command.account_id)

    async def FreezeAccount(self, request, context) -> Account:
        command = self._status_change(request)
        return await self._tx.idempotent(
            "FreezeAccount", request, Account,
            lambda conn: self._account(self._lines.freeze(conn, command)), account_id=command.account_id)

    async def UnfreezeAccount(self, request, context) -> Account:
        command = self._status_change(request)
        return await self._tx.idempotent(
            "UnfreezeAccount", request, Account,
            lambda conn: self._account(self._lines.unfreeze(conn, command)), account_id=command.account_id)

    @staticmethod
    def _status_change(request) -> ChangeStatus:
        f = Fields()
        command = ChangeStatus(account_id=f.uuid(request.account_id, "account_id"),
                               reason=f.text(request.reason, "reason"))
        f.idempotency_key(request.idempotency_key)
        f.done()
        return command

    @staticmethod
    async def _account(view_coroutine) -> Account:
        return convert.account(await view_coroutine)
