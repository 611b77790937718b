"""The credit.v1 contract as the servicers fill it: every domain value has its proto
enum number and back, nothing that lists its values is left a string, stored audit
records become typed messages, and every RPC is named by the convention in
docs/api-conventions.md."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credit.v1 import (
    checkout_pb2,
    collections_pb2,
    common_pb2,
    credit_line_pb2,
    repayment_pb2,
    risk_pb2,
    voice_gateway_pb2,
)
from server.core.collections import CaseView
from server.core.risk import DecisionRecordView
from server.domain.cases import Escalation, EscalationReason
from server.domain.errors import InvariantViolation
from server.domain.loans import Bucket
from server.domain.pricing import Grade
from server.domain.risk import (
    Decision,
    Facts,
    facts_json,
    facts_of_json,
    load,
    results_json,
    results_of_json,
)
from server.services import collections as collections_service
from server.services import convert

ROOT = Path(__file__).resolve().parents[2]
PROTOS = sorted((ROOT / "protos" / "credit" / "v1").glob("*.proto"))
FILES = [checkout_pb2, collections_pb2, common_pb2, credit_line_pb2, repayment_pb2, risk_pb2, voice_gateway_pb2]
NOW = datetime(2027, 2, 15, 2, 0, tzinfo=UTC)


# -- enums: one set of names, from the domain to the contract ----------------------------------

@pytest.mark.parametrize("domain, proto_enum, prefix", convert.ENUMS,
                         ids=[domain.__name__ for domain, _, _ in convert.ENUMS])
def test_every_domain_value_has_its_proto_number_and_back(domain, proto_enum, prefix):
    back = convert.from_proto_enum(proto_enum, prefix, domain)
    assert len(back) == len(domain) == len(proto_enum.keys()) - 1
    for value in domain:
        number = convert.to_proto_enum(proto_enum, prefix, value)
        assert number != 0 and back[number] is value
    assert convert.to_proto_enum(proto_enum, prefix, None) == 0


def test_every_enum_of_a_reply_is_in_the_table():
    """Every enum that the servicers fill from a domain value is round-tripped above; the
    rest are request-only filters or have no domain enum (named here)."""
    tabled = {proto_enum.DESCRIPTOR.full_name for _, proto_enum, _ in convert.ENUMS}
    every = {e.full_name for module in FILES for e in module.DESCRIPTOR.enum_types_by_name.values()}
    assert every - tabled == {"credit.v1.PromiseStatus", "credit.v1.PaymentChannel", "credit.v1.Gather",
                              "credit.v1.CallState"}


def test_every_enum_is_prefixed_with_its_name_and_starts_unspecified():
    for module in FILES:
        enums = list(module.DESCRIPTOR.enum_types_by_name.values())
        enums += [e for m in module.DESCRIPTOR.message_types_by_name.values() for e in m.enum_types]
        for enum_type in enums:
            prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum_type.name).upper() + "_"
            assert enum_type.values[0].name == prefix + "UNSPECIFIED" and enum_type.values[0].number == 0
            assert all(v.name.startswith(prefix) for v in enum_type.values), enum_type.full_name


# A comment that lists values the way enums do: "EMAIL or VOICE", "PENDING, SENT or FAILED".
LISTED_VALUES = re.compile(r"\b[A-Z][A-Z0-9_]+(?:, [A-Z][A-Z0-9_]+)*,? or [A-Z][A-Z0-9_]+\b")
STRING_FIELD = re.compile(r"^\s*(?:repeated\s+)?string\s+(\w+)\s*=")


def test_no_string_field_has_a_comment_that_lists_its_values():
    found = []
    for path in PROTOS:
        comment: list[str] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith("//"):
                comment.append(stripped)
                continue
            field = STRING_FIELD.match(line)
            if field and LISTED_VALUES.search(" ".join(comment) + " " + line.partition("//")[2]):
                found.append(f"{path.name}: {field.group(1)}")
            comment = []
    assert found == []
    assert LISTED_VALUES.search("// PENDING, DEFERRED, SENT or FAILED.")  # the pattern does find a list


def _type_and_number(message, name: str) -> tuple[str, int]:
    field = message.fields_by_name[name]
    kind = field.enum_type or field.message_type
    return (kind.name if kind is not None else "string"), field.number


def test_the_fields_that_listed_their_values_are_enums_under_new_numbers():
    promise = collections_pb2.Promise.DESCRIPTOR
    case = collections_pb2.Case.DESCRIPTOR
    record = risk_pb2.RiskDecisionRecord.DESCRIPTOR
    assert _type_and_number(promise, "source") == ("PromiseSource", 8)
    assert _type_and_number(case, "escalation_reason") == ("EscalationReason", 13)
    assert _type_and_number(case, "escalation_step_code") == ("string", 14)
    assert _type_and_number(record, "inputs") == ("RiskFacts", 12)
    assert _type_and_number(record, "rule_results") == ("RiskRuleResult", 13)
    for message, gone in ((promise, {6}), (case, {7}), (record, {4, 7, 8})):
        assert not gone & set(message.fields_by_number)
    assert {"inputs_json", "rule_results_json"}.isdisjoint(record.fields_by_name)


def test_no_field_carries_json_in_a_string():
    for module in FILES:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            for field in message.fields:
                assert not field.name.endswith("_json"), f"{message.full_name}.{field.name}"


# -- RPC names -----------------------------------------------------------------------------------

def test_every_rpc_takes_its_own_request_and_returns_its_response_or_a_resource():
    """docs/api-conventions.md: the request is `<Method>Request`, used by that RPC only;
    the response is `<Method>Response`, or a resource message (named for what it is, not
    Request or Response). A bidirectional stream carries commands and events."""
    methods = [m for module in FILES for s in module.DESCRIPTOR.services_by_name.values() for m in s.methods]
    assert len(methods) > 25
    for method in methods:
        request, response = method.input_type.name, method.output_type.name
        if method.client_streaming or method.server_streaming:
            assert not request.endswith(("Request", "Response")) and not response.endswith(("Request", "Response"))
            continue
        assert request == method.name + "Request", method.full_name
        if response.endswith("Response"):
            assert response == method.name + "Response", method.full_name
        assert not response.endswith("Request"), method.full_name
    assert all(s.name.endswith("Service") for module in FILES for s in module.DESCRIPTOR.services_by_name.values())


# -- collections: escalations and promises -------------------------------------------------------

@pytest.mark.parametrize("escalation", [Escalation(EscalationReason.BROKEN_PROMISE),
                                        Escalation(EscalationReason.DISPUTE),
                                        Escalation(EscalationReason.AGENT_REQUESTED),
                                        Escalation.by_step("D+30_EMAIL")])
def test_an_escalation_reads_back_as_it_was_stored(escalation):
    assert Escalation.of_stored(escalation.stored()) == escalation


def test_the_first_version_s_stored_escalations_still_read():
    assert Escalation.of_stored("STEP_D+30_EMAIL") == Escalation(EscalationReason.REMINDER_STEP, "D+30_EMAIL")
    assert Escalation.of_stored("AGENT_REQUESTED").reason is EscalationReason.AGENT_REQUESTED


@pytest.mark.parametrize("stored", ["ESCALATED", "STEP_", "REMINDER_STEP", ""])
def test_an_escalation_that_was_never_written_is_a_bug(stored):
    with pytest.raises(InvariantViolation):
        Escalation.of_stored(stored)


def test_a_step_code_goes_only_with_a_reminder_step():
    with pytest.raises(InvariantViolation):
        Escalation(EscalationReason.DISPUTE, "D+30_EMAIL")
    with pytest.raises(InvariantViolation):
        Escalation(EscalationReason.REMINDER_STEP)


def _case(escalation: Escalation | None) -> CaseView:
    return CaseView(account_id=uuid.uuid4(), bucket=Bucket.M1, days_past_due=31, overdue_minor=101_800,
                    penalty_owed_minor=1_500, escalation=escalation, needs_payment_check=False, promise=None,
                    preferences=(False, False, False), updated_at=NOW, as_of=NOW)


def test_a_case_escalated_by_a_step_names_the_step():
    message = collections_service.case(_case(Escalation.by_step("D+30_EMAIL")))
    assert message.escalated
    assert (message.escalation_reason, message.escalation_step_code) == (
        collections_pb2.ESCALATION_REASON_REMINDER_STEP, "D+30_EMAIL")
    plain = collections_service.case(_case(None))
    assert (plain.escalated, plain.escalation_reason, plain.escalation_step_code) == (
        False, collections_pb2.ESCALATION_REASON_UNSPECIFIED, "")


# -- risk decisions: the audit record typed ------------------------------------------------------

FACTS = Facts(amount_minor=400_000, grade=Grade.D, device_id="d1", ip_address="203.0.113.7",
              blocked=("ACCOUNT", "IP"), merchant_level="HIGH", account_approvals_last_hour=2,
              account_amount_last_day_minor=90_000, device_authorizations_last_hour=3,
              device_accounts_last_30_days=1, ip_accounts_last_day=4, device_known_for_account=False,
              captured_count=2, largest_captured_minor=80_000)


@given(st.builds(replace, st.just(FACTS),
                 amount_minor=st.integers(1, 10**12), grade=st.sampled_from(Grade),
                 blocked=st.lists(st.sampled_from(["ACCOUNT", "DEVICE", "IP"]), unique=True).map(tuple),
                 merchant_level=st.sampled_from([None, "MEDIUM", "HIGH", "BLOCK"]),
                 device_known_for_account=st.booleans(), largest_captured_minor=st.integers(0, 10**12)))
def test_stored_facts_read_back_as_they_were(facts):
    assert facts_of_json(facts_json(facts)) == facts


def test_a_decision_record_carries_typed_facts_and_every_rule_s_result():
    verdict = load().evaluate(FACTS)
    assert results_of_json(results_json(verdict.results)) == verdict.results
    view = DecisionRecordView(
        decision_id=uuid.uuid4(), account_id=uuid.uuid4(), authorization_id=uuid.uuid4(), decision=verdict.decision,
        score=verdict.score, reasons=verdict.reasons, inputs=facts_of_json(facts_json(FACTS)),
        rule_results=results_of_json(results_json(verdict.results)), ruleset_version=verdict.ruleset_version,
        created_at=NOW)
    message = convert.risk_decision_record(view)
    assert message.decision == checkout_pb2.RISK_DECISION_DECLINE and verdict.decision is Decision.DECLINE
    inputs = message.inputs
    assert (inputs.amount_minor, inputs.grade, inputs.device_id, inputs.ip_address) == (
        400_000, common_pb2.RISK_GRADE_D, "d1", "203.0.113.7")
    assert list(inputs.blocked) == [risk_pb2.RISK_LIST_KIND_ACCOUNT, risk_pb2.RISK_LIST_KIND_IP]
    assert inputs.merchant_level == risk_pb2.RISK_LIST_LEVEL_HIGH
    assert (inputs.account_approvals_last_hour, inputs.account_amount_last_day_minor,
            inputs.device_authorizations_last_hour, inputs.device_accounts_last_30_days,
            inputs.ip_accounts_last_day, inputs.device_known_for_account, inputs.captured_count,
            inputs.largest_captured_minor) == (2, 90_000, 3, 1, 4, False, 2, 80_000)
    assert [(r.rule, r.fired, r.score, r.detail) for r in message.rule_results] == [
        (r.rule, r.fired, r.score, r.detail) for r in verdict.results]
    assert list(message.reasons) == list(verdict.reasons) and len(verdict.reasons) >= 3
    # Every field of the facts reaches the message: a fact added later must be added here.
    assert {f.name for f in risk_pb2.RiskFacts.DESCRIPTOR.fields} == set(FACTS.__dataclass_fields__)


def test_a_merchant_on_no_list_is_unspecified():
    message = convert.risk_facts(replace(FACTS, merchant_level=None, blocked=()))
    assert (message.merchant_level, list(message.blocked)) == (risk_pb2.RISK_LIST_LEVEL_UNSPECIFIED, [])


def test_stored_json_of_another_shape_is_refused():
    with pytest.raises(InvariantViolation):
        facts_of_json(facts_json(replace(FACTS, blocked=("PHONE",))))
    with pytest.raises(InvariantViolation):
        facts_of_json('{"amount_minor": 1}')
    with pytest.raises(InvariantViolation):
        results_of_json('{"rule": "GRADE"}')
