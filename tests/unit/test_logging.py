"""Logs never carry contact data, tokens or card-like numbers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.typing import EventDict

from server.logging import _BEARER, _CARD, _EMAIL, _PHONE, mask, mask_secrets


def test_emails_phones_cards_and_bearer_tokens_are_masked():
    line = ("sent to li.lei@example.com at +8613800138000, card 6222 0212 3456 7890 123, "
            "Authorization: Bearer eyJhbGciOi.abc-DEF_123")
    masked = mask(line)
    for secret in ("li.lei", "example.com", "13800138000", "6222", "eyJhbGciOi"):
        assert secret not in masked
    assert "[email]" in masked and "[phone]" in masked and "[number]" in masked and "Bearer [token]" in masked


def test_mainland_mobile_numbers_without_a_prefix_are_masked():
    for number in ("13900000001", "139 0000 0001", "139-0000-0001", "call 18612345678 now"):
        assert "[phone]" in mask(number) and "0001" not in mask(number) and "5678" not in mask(number)
    # Amounts, ids and other numbers stay readable.
    for text in ("paid 101800 fen", "order 12345678901234567890", "2027-02-15", "10900000001"):
        assert mask(text) == text


def test_fields_named_like_secrets_are_redacted_whatever_they_hold():
    event = mask_secrets(None, "info", {"event": "x", "token": "abc", "detail": {"password": "p", "n": 5},
                                        "contact_name": "Wang Fang", "amount_minor": 101_800})
    assert event["token"] == "[redacted]" and event["detail"] == {"password": "[redacted]", "n": 5}
    assert event["contact_name"] == "[redacted]"
    assert event["amount_minor"] == 101_800  # money and ids stay readable


def test_uuids_and_amounts_are_left_alone():
    text = "account 6f0cac4f-cdca-4bbf-a4d6-a80d7c82bf7a paid 1018.00 (101800 fen)"
    assert mask(text) == text


def test_any_address_the_service_accepts_is_masked():
    for address in ("o'brien@example.com", "张伟@例子.中国", "zhang@mail.例子.cn", "a+b@x.io"):
        masked = mask(f"550 5.1.1 <{address}>: Recipient address rejected")
        assert "@" not in masked, masked


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789 -+@.abeBERrx\n", max_size=60))
def test_the_quick_check_never_lets_a_secret_through(text):
    """mask() skips text that no pattern could match; it must mask exactly as if it
    had run every substitution."""
    full = _BEARER.sub("Bearer [token]", text)
    full = _EMAIL.sub("[email]", full)
    full = _PHONE.sub("[phone]", full)
    assert mask(text) == _CARD.sub("[number]", full)


def test_an_authorization_id_is_an_id_not_a_credential():
    event = mask_secrets(None, "info", {"event": "rpc_finished", "authorization_id": "6f0cac4f",
                                        "authorization": "Bearer abc"})
    assert event["authorization_id"] == "6f0cac4f" and event["authorization"] == "[redacted]"


def test_fields_bound_in_a_task_reach_its_lines_and_no_other_tasks():
    import asyncio

    from server.logging import _merge_bound, bind

    async def call(request_id: str) -> EventDict:
        bind(request_id=request_id, method="/m")
        await asyncio.sleep(0)
        return _merge_bound(None, "info", {"event": "rpc_finished", "request_id_seen": True})

    async def both():
        return await asyncio.gather(asyncio.create_task(call("a")), asyncio.create_task(call("b")))

    first, second = asyncio.run(both())
    assert (first["request_id"], second["request_id"]) == ("a", "b")
    assert _merge_bound(None, "info", {"event": "x"}) == {"event": "x"}  # nothing bound out here
