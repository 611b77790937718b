"""The reminder call: recording notice, identity check, amount and date due, options,
confirmation, goodbye. Spoken through a `Line` (the gateway stream in production, a
script in unit tests). Scripts in zh-CN and en are data (`scripts/*.json`).

Nothing about the debt is said before the callee confirms being the customer; an
answering machine only hears a short message that names no amount.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Protocol

from server.domain.reminders import Outcome

SCRIPTS = Path(__file__).resolve().parent / "scripts"
# How often a question is asked again when nothing (or nothing usable) comes back.
MAX_REPEATS = 2
PROMISE_MAX_DAYS = 7
PROMPT_TIMEOUT_MS = 6_000


@dataclass(frozen=True)
class Answer:
    digits: str = ""
    speech: str = ""
    no_input: bool = False


class Line(Protocol):
    async def say(self, prompt_id: str, text: str) -> None: ...

    async def ask(self, prompt_id: str, text: str, max_digits: int) -> Answer: ...


@dataclass(frozen=True)
class Facts:
    """What the call may say, once the customer is identified."""

    name: str
    amount: str
    due_date: date
    today: date
    overdue: bool


@dataclass
class Result:
    outcome: Outcome
    promised_date: date | None = None
    transcript: list[dict] = field(default_factory=list)


@cache
def script(locale: str) -> dict:
    path = SCRIPTS / f"{locale}.json"
    if not path.is_file():
        path = SCRIPTS / "en.json"
    return json.loads(path.read_text(encoding="utf-8"))


class _Recorded:
    """A Line that also writes the transcript."""

    def __init__(self, line: Line, transcript: list[dict]) -> None:
        self._line = line
        self.transcript = transcript

    async def say(self, prompt_id: str, text: str) -> None:
        self.transcript.append({"bot": text, "prompt_id": prompt_id})
        await self._line.say(prompt_id, text)

    async def ask(self, prompt_id: str, text: str, max_digits: int = 1) -> Answer:
        self.transcript.append({"bot": text, "prompt_id": prompt_id})
        answer = await self._line.ask(prompt_id, text, max_digits)
        self.transcript.append({"callee": "(no input)" if answer.no_input else (answer.digits or answer.speech),
                                "prompt_id": prompt_id})
        return answer


def _choice(answer: Answer, words: dict[str, list[str]], digits: dict[str, str]) -> str | None:
    if answer.digits:
        return digits.get(answer.digits[:1])
    spoken = answer.speech.strip().lower()
    # Longer phrases first, so "already paid" is not read as "paid today".
    for name, phrases in sorted(words.items(), key=lambda kv: -max(len(p) for p in kv[1])):
        if any(phrase.lower() in spoken for phrase in sorted(phrases, key=len, reverse=True)):
            return name
    return None


async def _ask_until(line: _Recorded, text_of: dict, prompt_id: str, text: str, understand,
                     max_digits: int = 1):
    """Ask, repeating on silence or an answer we cannot use, at most MAX_REPEATS times."""
    for attempt in range(MAX_REPEATS + 1):
        answer = await line.ask(prompt_id, text, max_digits)
        meaning = understand(answer)
        if meaning is not None:
            return meaning, answer
        if attempt < MAX_REPEATS:
            await line.say("no_input", text_of["no_input"])
    return None, answer


async def converse(line: Line, locale: str, facts: Facts, transcript: list[dict] | None = None) -> Result:
    """Hold the dialogue; every line said and heard is appended to `transcript` as it
    happens, so it survives a call cut short."""
    text = script(locale)
    keywords = text["keywords"]
    transcript = [] if transcript is None else transcript
    spoken = _Recorded(line, transcript)
    await spoken.say("recording_notice", text["recording_notice"])

    who, _ = await _ask_until(spoken, text, "identity", text["identity"].format(name=facts.name),
                              lambda a: _choice(a, {k: keywords[k] for k in ("yes", "no")},
                                                {"1": "yes", "2": "no"}))
    if who == "no":
        await spoken.say("wrong_person", text["wrong_person"])
        return Result(Outcome.WRONG_PERSON, transcript=transcript)
    if who is None:
        return Result(Outcome.NO_ANSWER, transcript=transcript)

    status = (text["status_overdue"] if facts.overdue else text["status_due"]).format(due_date=facts.due_date)
    await spoken.say("amount_due", text["amount_due"].format(name=facts.name, amount=facts.amount, status=status))
    option_words = {k: keywords[k] for k in ("pay_today", "promise", "paid", "dispute", "agent", "refuse")}
    choice, _ = await _ask_until(spoken, text, "options", text["options"],
                                 lambda a: _choice(a, option_words, {"1": "pay_today", "2": "promise", "3": "paid",
                                                                     "4": "dispute", "5": "agent", "0": "refuse"}))
    result: Result
    if choice == "pay_today":
        await spoken.say("pay_today", text["pay_today"])
        result = Result(Outcome.PROMISE_TO_PAY, facts.today, transcript)
    elif choice == "promise":
        promised = await _promise(spoken, text, facts)
        result = Result(Outcome.PROMISE_TO_PAY, promised, transcript) if promised else Result(
            Outcome.REFUSED, transcript=transcript)
    elif choice == "paid":
        await spoken.say("claims_paid", text["claims_paid"])
        result = Result(Outcome.CLAIMS_PAID, transcript=transcript)
    elif choice == "dispute":
        await spoken.say("dispute", text["dispute"])
        result = Result(Outcome.DISPUTE, transcript=transcript)
    elif choice == "agent":
        await spoken.say("agent", text["agent"])
        result = Result(Outcome.REQUEST_AGENT, transcript=transcript)
    else:
        # Pressed 0, said they will not pay, or stayed silent after being identified.
        await spoken.say("refused", text["refused"])
        result = Result(Outcome.REFUSED, transcript=transcript)
    await spoken.say("goodbye", text["goodbye"])
    return result


async def _promise(spoken: _Recorded, text: dict, facts: Facts) -> date | None:
    for _ in range(MAX_REPEATS):
        days, _ = await _ask_until(
            spoken, text, "promise_days", text["promise_days"],
            lambda a: int(d) if (d := (a.digits or "".join(c for c in a.speech if c.isdigit()))[:1]).isdigit()
            and 1 <= int(d) <= PROMISE_MAX_DAYS else None)
        if days is None:
            return None
        promised = facts.today + timedelta(days=days)
        confirmed, _ = await _ask_until(
            spoken, text, "confirm_promise",
            text["confirm_promise"].format(amount=facts.amount, promised_date=promised),
            lambda a: _choice(a, {"yes": text["keywords"]["yes"], "no": text["keywords"]["no"]},
                              {"1": "yes", "2": "no"}))
        if confirmed == "yes":
            await spoken.say("promise_recorded", text["promise_recorded"].format(promised_date=promised))
            return promised
        if confirmed is None:
            return None
    return None
