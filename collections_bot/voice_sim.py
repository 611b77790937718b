"""A VoiceGatewayService simulator: a real gRPC server whose callees follow scripted personas.

    python -m collections_bot.voice_sim --listen 127.0.0.1:50061

The persona is chosen by the dialled number: an explicit map (--persona NUMBER=NAME,
or VOICE_SIM_PERSONAS="NUMBER=NAME,..."), else the number's last digit:

    0 pays today        4 answering machine     8 disputes
    1 promises a date   5 does not answer       9 asks for an agent
    2 refuses to pay    6 answers, says nothing
    3 wrong person      7 says they have paid (by speech)

Other personas for the map: busy, fails, drops_then_promises (the line drops in the
middle of the first call; the next call to that number promises), hangs_up.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
from dataclasses import dataclass

import grpc
import structlog

from credit.v1 import voice_gateway_pb2 as pb
from credit.v1 import voice_gateway_pb2_grpc
from server.logging import configure_logging

log = structlog.get_logger("voice_sim")

BY_LAST_DIGIT = {"0": "pays", "1": "promises", "2": "refuses", "3": "wrong_person", "4": "machine",
                 "5": "no_answer", "6": "silent", "7": "claims_paid", "8": "disputes", "9": "agent"}

# What each persona answers, by prompt id: digits, or ("speech", text by locale); None
# is silence.
Answer = str | tuple[str, dict[str, str]]
ANSWERS: dict[str, dict[str, Answer]] = {
    "pays": {"identity": "1", "options": "1"},
    "promises": {"identity": "1", "options": "2", "promise_days": "3", "confirm_promise": "1"},
    "refuses": {"identity": "1", "options": "0"},
    "wrong_person": {"identity": "2"},
    "silent": {},
    "claims_paid": {"identity": ("speech", {"en": "yes, speaking", "zh-CN": "是的，我是"}),
                    "options": ("speech", {"en": "I already paid last week", "zh-CN": "我上周已经还过了"})},
    "disputes": {"identity": "1", "options": "4"},
    "agent": {"identity": "1", "options": "5"},
    "drops_then_promises": {"identity": "1", "options": "2", "promise_days": "3", "confirm_promise": "1"},
    "hangs_up": {"identity": "1"},
}


@dataclass
class CallLog:
    persona: str
    prompts: list[str]


class Simulator(voice_gateway_pb2_grpc.VoiceGatewayServiceServicer):
    def __init__(self, personas: dict[str, str] | None = None) -> None:
        self.personas = dict(personas or {})
        self.calls: collections.Counter[str] = collections.Counter()
        self.logs: list[CallLog] = []

    def persona(self, number: str) -> str:
        return self.personas.get(number) or BY_LAST_DIGIT.get(number[-1:], "silent")

    async def PlaceCall(self, request_iterator, context):
        commands = request_iterator.__aiter__()
        first = await commands.__anext__()
        if not first.HasField("start"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first command must be start")
        number = first.start.to_number
        persona = self.persona(number)
        self.calls[number] += 1
        call_log = CallLog(persona, [])
        self.logs.append(call_log)
        log.info("call_placed", call_id=first.start.call_id, number=number, persona=persona)
        yield progress(pb.CALL_STATE_RINGING)
        if persona == "no_answer":
            yield progress(pb.CALL_STATE_NO_ANSWER)
            return
        if persona == "busy":
            yield progress(pb.CALL_STATE_BUSY)
            return
        if persona == "fails":
            yield progress(pb.CALL_STATE_FAILED, "carrier rejected the call")
            return
        yield progress(pb.CALL_STATE_ANSWERED_MACHINE if persona == "machine" else pb.CALL_STATE_ANSWERED_HUMAN)
        answers = ANSWERS.get(persona, {})
        drop_now = persona == "drops_then_promises" and self.calls[number] == 1
        async for command in commands:
            if command.HasField("hangup"):
                return
            if not command.HasField("prompt"):
                continue
            prompt = command.prompt
            call_log.prompts.append(prompt.prompt_id)
            if drop_now and prompt.prompt_id == "confirm_promise":
                # The line drops in the middle of the dialogue, before it ends.
                await context.abort(grpc.StatusCode.UNAVAILABLE, "media stream lost")
            if persona == "hangs_up" and prompt.prompt_id == "options":
                yield progress(pb.CALL_STATE_HUNG_UP)
                return
            if prompt.gather in (pb.GATHER_NONE, pb.GATHER_UNSPECIFIED):
                yield pb.CallEvent(played=pb.PromptPlayed(prompt_id=prompt.prompt_id))
                continue
            answer = answers.get(prompt.prompt_id)
            if answer is None:
                yield pb.CallEvent(input=pb.CallInput(prompt_id=prompt.prompt_id, no_input=True))
            elif isinstance(answer, tuple):
                speech = answer[1].get(prompt.locale) or answer[1]["en"]
                yield pb.CallEvent(input=pb.CallInput(prompt_id=prompt.prompt_id, speech=speech, confidence=0.9))
            else:
                yield pb.CallEvent(input=pb.CallInput(prompt_id=prompt.prompt_id, digits=answer))


def progress(state: pb.CallState.ValueType, detail: str = "") -> pb.CallEvent:
    return pb.CallEvent(progress=pb.CallProgress(state=state, detail=detail))


def parse_personas(text: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        number, _, persona = item.partition("=")
        if persona not in ANSWERS and persona not in {"machine", "no_answer", "busy", "fails"}:
            raise SystemExit(f"unknown persona {persona!r} for {number}")
        pairs[number] = persona
    return pairs


async def serve(address: str, simulator: Simulator) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    voice_gateway_pb2_grpc.add_VoiceGatewayServiceServicer_to_server(simulator, server)
    port = server.add_insecure_port(address)
    await server.start()
    return server, port


async def _main(address: str, personas: dict[str, str]) -> None:
    server, port = await serve(address, Simulator(personas))
    log.info("voice_sim_started", address=f"{address.rpartition(':')[0]}:{port}")
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default=os.environ.get("VOICE_GATEWAY_ADDR") or "127.0.0.1:50061")
    parser.add_argument("--persona", action="append", default=[], help="NUMBER=PERSONA")
    args = parser.parse_args()
    configure_logging(os.environ.get("LOG_LEVEL") or "info")
    personas = parse_personas(os.environ.get("VOICE_SIM_PERSONAS", "") + "," + ",".join(args.persona))
    asyncio.run(_main(args.listen, personas))


if __name__ == "__main__":
    main()
