"""The voice channel: one reminder call over the VoiceGatewayService stream."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import date

import grpc
import structlog

from collections_bot.voice.dialogue import Answer, Facts, Outcome, converse, script
from credit.v1 import voice_gateway_pb2 as pb
from credit.v1 import voice_gateway_pb2_grpc

log = structlog.get_logger(__name__)


class CallBroken(Exception):
    """The gateway is down or the stream broke before the call reached an outcome."""


class CalleeHungUp(Exception):
    pass


@dataclass
class CallResult:
    outcome: Outcome | None
    promised_date: date | None = None
    transcript: list[dict] = field(default_factory=list)
    failure: str | None = None


class GatewayLine:
    """A dialogue Line over an open PlaceCall stream."""

    def __init__(self, stream, locale: str, read_timeout_s: float, transcript: list[dict]) -> None:
        self._stream = stream
        self._locale = locale
        self._read_timeout_s = read_timeout_s
        self._transcript = transcript

    async def say(self, prompt_id: str, text: str) -> None:
        await self._send(pb.Prompt(prompt_id=prompt_id, text=text, locale=self._locale, gather=pb.GATHER_NONE))
        await self._next(prompt_id)

    async def ask(self, prompt_id: str, text: str, max_digits: int) -> Answer:
        await self._send(pb.Prompt(prompt_id=prompt_id, text=text, locale=self._locale,
                                   gather=pb.GATHER_DIGITS_OR_SPEECH, max_digits=max_digits, timeout_ms=6_000))
        event = await self._next(prompt_id)
        return Answer(digits=event.input.digits, speech=event.input.speech, no_input=event.input.no_input)

    async def _send(self, prompt: pb.Prompt) -> None:
        try:
            await self._stream.write(pb.CallCommand(prompt=prompt))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            raise CallBroken(f"writing {prompt.prompt_id}: {error}") from error

    async def _next(self, prompt_id: str) -> pb.CallEvent:
        event = await read_event(self._stream, self._read_timeout_s)
        if event.HasField("progress"):
            self._transcript.append({"event": pb.CallState.Name(event.progress.state)})
            if event.progress.state == pb.CALL_STATE_HUNG_UP:
                raise CalleeHungUp()
            raise CallBroken(f"unexpected progress {pb.CallState.Name(event.progress.state)} during {prompt_id}")
        return event


async def read_event(stream, timeout_s: float) -> pb.CallEvent:
    try:
        event = await asyncio.wait_for(stream.read(), timeout=timeout_s)
    except TimeoutError as error:
        raise CallBroken("the gateway went quiet") from error
    except grpc.aio.AioRpcError as error:
        raise CallBroken(f"{error.code().name}: {error.details()}") from error
    if event is grpc.aio.EOF:
        raise CallBroken("the gateway closed the stream")
    return event


class VoiceChannel:
    def __init__(self, *, address: str, caller_id: str, call_timeout_s: float, read_timeout_s: float,
                 ring_timeout_ms: int = 30_000) -> None:
        self._address = address
        self._caller_id = caller_id
        self._call_timeout_s = call_timeout_s
        self._read_timeout_s = read_timeout_s
        self._ring_timeout_ms = ring_timeout_ms

    async def call(self, call_id: str, to_number: str, locale: str, facts: Facts) -> CallResult:
        """Place the call and hold the dialogue. A broken stream before an outcome is a
        failure (the caller retries); a callee who hangs up ends the call."""
        transcript: list[dict] = []
        try:
            async with grpc.aio.insecure_channel(self._address) as channel:
                stream = voice_gateway_pb2_grpc.VoiceGatewayServiceStub(channel).PlaceCall(timeout=self._call_timeout_s)
                try:
                    return await self._hold(stream, call_id, to_number, locale, facts, transcript)
                finally:
                    stream.cancel()
        except CallBroken as error:
            log.warning("call_broken", call_id=call_id, detail=str(error))
            return CallResult(None, transcript=transcript, failure=str(error))
        except grpc.aio.AioRpcError as error:
            return CallResult(None, transcript=transcript, failure=f"{error.code().name}: {error.details()}")

    async def _hold(self, stream, call_id: str, to_number: str, locale: str, facts: Facts,
                    transcript: list[dict]) -> CallResult:
        try:
            await stream.write(pb.CallCommand(start=pb.StartCall(
                call_id=call_id, to_number=to_number, locale=locale, caller_id=self._caller_id,
                ring_timeout_ms=self._ring_timeout_ms)))
        except grpc.aio.AioRpcError as error:
            raise CallBroken(f"{error.code().name}: {error.details()}") from error
        while True:
            event = await read_event(stream, self._read_timeout_s)
            if not event.HasField("progress"):
                raise CallBroken("the gateway answered before the call was connected")
            state = event.progress.state
            transcript.append({"event": pb.CallState.Name(state)})
            if state == pb.CALL_STATE_RINGING:
                continue
            if state in (pb.CALL_STATE_BUSY, pb.CALL_STATE_NO_ANSWER, pb.CALL_STATE_HUNG_UP):
                return CallResult(Outcome.NO_ANSWER, transcript=transcript)
            if state == pb.CALL_STATE_FAILED:
                raise CallBroken(f"the call failed: {event.progress.detail}")
            break
        line = GatewayLine(stream, locale, self._read_timeout_s, transcript)
        if state == pb.CALL_STATE_ANSWERED_MACHINE:
            # A short message with no debt details: we cannot know who will hear it.
            text = script(locale)["machine"].format(name=facts.name)
            transcript.append({"bot": text, "prompt_id": "machine"})
            await line.say("machine", text)
            await self._hang_up(stream, "machine message left")
            return CallResult(Outcome.ANSWERING_MACHINE, transcript=transcript)
        try:
            result = await converse(line, locale, facts, transcript)
        except CalleeHungUp:
            identified = any(entry.get("prompt_id") == "amount_due" for entry in transcript)
            return CallResult(Outcome.REFUSED if identified else Outcome.NO_ANSWER, transcript=transcript)
        await self._hang_up(stream, "dialogue finished")
        return CallResult(result.outcome, result.promised_date, transcript)

    @staticmethod
    async def _hang_up(stream, reason: str) -> None:
        # The outcome is known: a line that drops at goodbye changes nothing.
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await stream.write(pb.CallCommand(hangup=pb.Hangup(reason=reason)))
            await stream.done_writing()
