"""`buf breaking` of protos/ against the previous commit, less the changes accepted on
purpose in protos/breaking-accepted.yaml.

The previous commit's protos are taken with `git archive` into a temporary folder and
compared as a directory. That works the same in a clone, a worktree (whose `.git` is a
file) and CI's fresh clone, and it lets this script tell the cases apart:

- the commit cannot be read: the check fails, with git's own words;
- a shallow clone that lacks the commit, or a first commit with no parent: the check
  cannot run, and says so in a message that tells how to run it (exit 0);
- the commit predates protos/: nothing to compare, said so (exit 0).

Every finding that is not accepted fails the check. An accepted entry matches one
finding by rule, file and buf's message (not by line, which moves); its `why` is for
the reader. Usage: python tools/proto_breaking.py [--against REF] [--buf PATH]
(REF defaults to $BUF_BREAKING_AGAINST, else HEAD~1).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROTOS = "protos"
ACCEPTED = Path(PROTOS) / "breaking-accepted.yaml"
DEFAULT_BUF = Path("tools") / "node_modules" / ".bin" / "buf"
GIT_TIMEOUT_S = 60
BUF_TIMEOUT_S = 300
# buf's exit status when it ran and found breaking changes (anything else non-zero is
# buf failing to run).
BUF_FOUND = 100


class CheckFailed(Exception):
    """The check could not run where it must, or found what was not accepted."""


@dataclass(frozen=True)
class Finding:
    rule: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}: {self.message}"


def git(repo: Path, *args: str, binary: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=not binary,
                          timeout=GIT_TIMEOUT_S, check=False)


def previous_tree(repo: Path, ref: str) -> str | None:
    """The commit to compare with, or None (with the reason printed) when there is
    genuinely none to read. Raises CheckFailed when it should be there and is not."""
    inside = git(repo, "rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0:
        raise CheckFailed(f"{repo} is not a git work tree, so the previous commit's protos cannot be read: "
                          f"{inside.stderr.strip()}")
    found = git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if found.returncode == 0:
        commit = found.stdout.strip()
        if git(repo, "cat-file", "-e", f"{commit}:{PROTOS}").returncode != 0:
            print(f"buf breaking: {ref} ({commit[:12]}) has no {PROTOS}/: nothing to compare with.")
            return None
        return commit
    if git(repo, "rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        print(f"buf breaking: NOT RUN. This is a shallow clone and {ref} is not in it. "
              f"Fetch more history (git fetch --deepen=1) to check the protos for breaking changes.")
        return None
    if ref == "HEAD~1" and len(git(repo, "rev-list", "--parents", "-n", "1", "HEAD").stdout.split()) == 1:
        print("buf breaking: HEAD is the first commit; there is no previous contract to compare with.")
        return None
    raise CheckFailed(f"cannot read {ref} to compare the protos with (not a shallow clone): "
                      f"{git(repo, 'rev-parse', '--verify', f'{ref}^{{commit}}').stderr.strip() or 'unknown ref'}")


def extract_protos(repo: Path, commit: str, into: Path) -> Path:
    archive = git(repo, "archive", "--format=tar", commit, PROTOS, binary=True)
    if archive.returncode != 0:
        raise CheckFailed(f"git archive {commit[:12]} {PROTOS} failed: {archive.stderr.decode(errors='replace')}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / PROTOS


def breaking_findings(buf: Path, protos: Path, against: Path) -> list[Finding]:
    # Run inside the module so that findings name files as the accepted list does
    # (credit/v1/x.proto), wherever the clone is.
    ran = subprocess.run([str(buf.resolve()), "breaking", ".", "--against", str(against.resolve()),
                          "--error-format=json"],
                         cwd=protos, capture_output=True, text=True, timeout=BUF_TIMEOUT_S, check=False)
    if ran.returncode not in (0, BUF_FOUND):
        raise CheckFailed(f"buf breaking did not run (exit {ran.returncode}): {ran.stderr.strip() or ran.stdout}")
    findings = [json.loads(line) for line in ran.stdout.splitlines() if line.strip()]
    if ran.returncode == BUF_FOUND and not findings:
        raise CheckFailed(f"buf breaking reported changes it did not list: {ran.stderr.strip()}")
    return [Finding(f["type"], f["path"], f["message"]) for f in findings]


def accepted_findings(path: Path) -> set[Finding]:
    if not path.exists():
        return set()
    entries = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("accepted") or []
    accepted = set()
    for number, entry in enumerate(entries, 1):
        missing = {"rule", "path", "message", "why"} - set(entry)
        if missing or not str(entry["why"]).strip():
            raise CheckFailed(f"{path}: entry {number} needs rule, path, message and a why; missing {sorted(missing)}")
        accepted.add(Finding(entry["rule"], entry["path"], entry["message"]))
    return accepted


def check(repo: Path, ref: str, buf: Path, accepted_path: Path) -> int:
    if not buf.exists():
        raise CheckFailed(f"{buf} is missing: run `make install` (npm ci in tools/)")
    commit = previous_tree(repo, ref)
    if commit is None:
        return 0
    accepted = accepted_findings(accepted_path)
    with tempfile.TemporaryDirectory(prefix="proto-breaking-") as tmp:
        against = extract_protos(repo, commit, Path(tmp))
        findings = breaking_findings(buf, repo / PROTOS, against)
    unaccepted = [f for f in findings if f not in accepted]
    for finding in findings:
        if finding in accepted:
            print(f"buf breaking: accepted ({accepted_path.name}): {finding}")
    if unaccepted:
        listed = "\n".join(f"  {f}" for f in unaccepted)
        raise CheckFailed(f"breaking changes against {ref} ({commit[:12]}):\n{listed}\n"
                          f"Make the change compatible, or accept it in {accepted_path} with the reason.")
    print(f"buf breaking: no unaccepted breaking change against {ref} ({commit[:12]}).")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default=os.environ.get("BUF_BREAKING_AGAINST") or "HEAD~1")
    parser.add_argument("--buf", type=Path, default=ROOT / DEFAULT_BUF)
    parser.add_argument("--repo", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    try:
        return check(args.repo, args.against, args.buf, args.repo / ACCEPTED)
    except (CheckFailed, subprocess.TimeoutExpired) as exc:
        print(f"buf breaking: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
