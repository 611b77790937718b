"""The reminder call's dialogue over a scripted line: what is said, in what order, and
what each answer leads to."""

from __future__ import annotations

from datetime import date

import pytest

from collections_bot.voice.dialogue import MAX_REPEATS, Answer, Facts, Outcome, converse, script

FACTS = Facts(name="Li Lei", amount="1,018.00", due_date=date(2027, 2, 15), today=date(2027, 2, 20), overdue=True)


class ScriptedLine:
    """Answers each question from a list per prompt id; silence when the list is empty."""

    def __init__(self, answers: dict[str, list[Answer]]) -> None:
        self.answers = {k: list(v) for k, v in answers.items()}
        self.said: list[tuple[str, str]] = []

    async def say(self, prompt_id: str, text: str) -> None:
        self.said.append((prompt_id, text))

    async def ask(self, prompt_id: str, text: str, max_digits: int) -> Answer:
        self.said.append((prompt_id, text))
        queue = self.answers.get(prompt_id) or []
        return queue.pop(0) if queue else Answer(no_input=True)


def keys(*digits: str) -> list[Answer]:
    return [Answer(digits=d) for d in digits]


@pytest.mark.parametrize("option, outcome", [("1", Outcome.PROMISE_TO_PAY), ("3", Outcome.CLAIMS_PAID),
                                             ("4", Outcome.DISPUTE), ("5", Outcome.REQUEST_AGENT),
                                             ("0", Outcome.REFUSED)])
async def test_each_option_leads_to_its_outcome(option, outcome):
    line = ScriptedLine({"identity": keys("1"), "options": keys(option)})
    result = await converse(line, "en", FACTS)
    assert result.outcome is outcome
    assert [p for p, _ in line.said][:4] == ["recording_notice", "identity", "amount_due", "options"]
    assert line.said[-1][0] == "goodbye"
    if outcome is Outcome.PROMISE_TO_PAY:
        assert result.promised_date == FACTS.today


async def test_a_promise_is_a_date_within_seven_days_confirmed_by_the_customer():
    line = ScriptedLine({"identity": keys("1"), "options": keys("2"), "promise_days": keys("9", "4"),
                         "confirm_promise": keys("2", "1")})
    # 9 is out of range (asked again), 4 days -> 02-24, not confirmed; asked again: 4 -> confirmed.
    line.answers["promise_days"].append(Answer(digits="4"))
    result = await converse(line, "en", FACTS)
    assert (result.outcome, result.promised_date) == (Outcome.PROMISE_TO_PAY, date(2027, 2, 24))
    assert any("2027-02-24" in text for p, text in line.said if p == "promise_recorded")


async def test_the_debt_is_never_mentioned_to_someone_who_is_not_the_customer():
    line = ScriptedLine({"identity": keys("2")})
    result = await converse(line, "zh-CN", FACTS)
    assert result.outcome is Outcome.WRONG_PERSON
    spoken = " ".join(text for _, text in line.said)
    assert "1,018.00" not in spoken and "逾期" not in spoken and "2027" not in spoken


async def test_silence_repeats_the_question_a_bounded_number_of_times():
    line = ScriptedLine({})
    result = await converse(line, "en", FACTS)
    assert result.outcome is Outcome.NO_ANSWER
    assert [p for p, _ in line.said].count("identity") == MAX_REPEATS + 1


@pytest.mark.parametrize("locale, yes, paid", [("en", "yes that's me", "I already paid"),
                                                ("zh-CN", "是的", "我已经还了")])
async def test_speech_is_understood_in_both_languages(locale, yes, paid):
    line = ScriptedLine({"identity": [Answer(speech=yes)], "options": [Answer(speech=paid)]})
    assert (await converse(line, locale, FACTS)).outcome is Outcome.CLAIMS_PAID


def test_both_scripts_have_every_line_and_keyword():
    english, chinese = script("en"), script("zh-CN")
    assert set(english) == set(chinese)
    assert set(english["keywords"]) == set(chinese["keywords"])
    assert script("fr") == english  # an unknown locale falls back to English


async def test_the_transcript_records_both_sides():
    line = ScriptedLine({"identity": keys("1"), "options": keys("4")})
    result = await converse(line, "en", FACTS)
    assert {"callee": "1", "prompt_id": "identity"} in result.transcript
    assert result.transcript[0]["prompt_id"] == "recording_notice"
