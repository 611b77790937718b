"""The README's grpcurl walkthrough works, as written, against a live server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import ROOT


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- walkthrough:.*?-->\s*```bash\n(.*?)```", text, re.S)
    assert match, "README.md lost its walkthrough block"
    return match.group(1)


def test_the_readme_walkthrough_opens_authorizes_and_captures(server):
    script = walkthrough()
    assert "ADDR=localhost:50051" in script
    script = "set -euo pipefail\n" + script.replace("ADDR=localhost:50051", f"ADDR={server.address}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
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
