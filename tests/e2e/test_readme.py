"""The README's grpcurl walkthrough works, as written, against a live server, and its
AssessCredit example gives the reply shown; its recipe for running the collections bot
by hand uses the settings and flags the bot and its parts really have."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from collections_bot.config import BotSettings
from server import contact_crypto
from tests.e2e.conftest import ROOT

# What differs from one run to the next in the AssessCredit reply.
# What depends on the day and the run: ids, times, and the statement day (by default
# the day the account opened).
RUN_FIELDS = {"account_id", "customer_id", "created_at", "updated_at", "statement_day", "next_statement_date"}
ASSESS_MARK = "=== the AssessCredit block ==="


def block(name: str, language: str = "bash") -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {name}:.*?-->\s*```{language}\n(.*?)```", text, re.S)
    assert match, f"README.md lost its {name} block"
    return match.group(1)


def walkthrough() -> str:
    return block("walkthrough")


def run_specific(reply: dict) -> dict:
    return {**reply, "account": {k: v for k, v in reply["account"].items() if k not in RUN_FIELDS}}


def test_the_readme_walkthrough_opens_authorizes_and_captures(server):
    script = walkthrough()
    assert "ADDR=localhost:50051" in script
    script = "set -euo pipefail\n" + script.replace("ADDR=localhost:50051", f"ADDR={server.address}")
    script += f"\necho '{ASSESS_MARK}'\n" + block("assess")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    out, assessed = result.stdout.split(ASSESS_MARK + "\n")

    # The AssessCredit example gives the reply the README shows, but for this run's ids
    # and times.
    shown = json.loads(block("assess-reply", "json"))
    assert RUN_FIELDS <= shown["account"].keys()
    assert run_specific(json.loads(assessed)) == run_specific(shown)
    assert "credit.v1.CheckoutService" in out
    assert '"status": "LOAN_STATUS_ACTIVE"' in out
    assert '"outstanding_principal_minor": "129900"' in out
    assert '"available_minor": "370100"' in out
    assert out.count('"installments"') >= 2
    assert '"applied_minor": "50000"' in out
    payoff = out[out.rindex('"repayment_id"'):]
    assert '"unapplied_minor": "0"' in payoff
    assert '"outstanding_principal_minor": "0"' in payoff
    assert '"available_minor": "500000"' in payoff


def bot_recipe() -> str:
    blocks = re.findall(r"<!-- bot:.*?-->\s*```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "README.md lost its collections bot recipe"
    return "\n".join(blocks)


class ReadNames(dict):
    """An environment that remembers every name looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, name, default=None):
        self.read.add(name)
        return super().get(name, default)

    def __getitem__(self, name):
        self.read.add(name)
        return super().__getitem__(name)


def names_the_bot_reads() -> set[str]:
    env = ReadNames(contact_crypto.generate_env())
    BotSettings.from_env(env)
    contact_crypto.from_env(env)
    return env.read


def declared_arguments(module: str) -> set[str]:
    """The flags and subcommands a module's argparse parser declares."""
    path = ROOT / module.replace(".", "/")
    source = (path / "__main__.py" if path.is_dir() else path.with_suffix(".py")).read_text()
    return set(re.findall(r"add_(?:argument|parser)\(\s*\"([\w-]+)\"", source))


def test_the_bot_recipe_sets_what_the_bot_reads_and_calls_its_voice_gateway():
    recipe = bot_recipe()
    assigned = dict(re.findall(r"(?<![\w-])([A-Z][A-Z0-9_]*)=(\S+)", recipe))
    reads = names_the_bot_reads()
    assert set(assigned) <= reads, f"the bot reads none of {set(assigned) - reads}"
    # Without a gateway no voice step is sent (they wait, DEFERRED).
    assert "VOICE_GATEWAY_ADDR" in assigned
    settings = BotSettings.from_env({**contact_crypto.generate_env(), **assigned})
    assert settings.voice_gateway_addr == assigned["VOICE_GATEWAY_ADDR"]

    commands = re.findall(r"python -m ([\w.]+)([^#&\n]*)", recipe)
    assert {module for module, _ in commands} >= {"collections_bot", "collections_bot.mail_sink",
                                                  "collections_bot.voice_sim"}
    for module, args in commands:
        words = args.split()
        used = {w for w in words if w.startswith("--")}
        if words and not words[0].startswith("-"):
            used.add(words[0])  # a subcommand
        assert used <= declared_arguments(module), f"{module} has no {used - declared_arguments(module)}"
        # The parts the bot uses listen where the bot's settings point.
        flags = {flag: value for flag, value in zip(words, words[1:], strict=False) if flag.startswith("--")}
        if module == "collections_bot.voice_sim":
            assert flags["--listen"] == settings.voice_gateway_addr
        if module == "collections_bot.mail_sink":
            assert int(flags["--port"]) == settings.smtp_port


def test_the_readme_documents_every_setting_the_bot_reads():
    readme = (ROOT / "README.md").read_text()
    assert [name for name in sorted(names_the_bot_reads()) if f"`{name}`" not in readme] == []
