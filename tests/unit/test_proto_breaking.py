"""tools/proto_breaking.py on small git repositories made here: a breaking change fails
unless accepted, an unreadable previous commit fails loudly, and only a shallow clone
or a first commit may skip, saying so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "proto_breaking.py"
BUF = ROOT / "tools" / "node_modules" / ".bin" / "buf"
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}

PROTO = """syntax = "proto3";
package shop.v1;
message Order {{
{fields}
}}
"""
ACCEPTED = """accepted:
  - rule: FIELD_NO_DELETE
    path: shop/v1/order.proto
    message: Previously present field "2" with name "note" on message "Order" was deleted.
    why: the note moved elsewhere.
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], env=GIT_ENV, capture_output=True, text=True, check=True,
                          timeout=60).stdout


def commit_protos(repo: Path, fields: str, message: str) -> None:
    path = repo / "protos" / "shop" / "v1" / "order.proto"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PROTO.format(fields=fields), encoding="utf-8")
    (repo / "protos" / "buf.yaml").write_text("version: v2\nbreaking:\n  use:\n    - FILE\n", encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def check(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--repo", str(repo), "--buf", str(BUF), *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def repo(tmp_path) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    git(folder, "init", "-q", "-b", "main")
    commit_protos(folder, "  string order_id = 1;\n  string note = 2;", "first")
    return folder


def test_buf_is_installed_by_make_install():
    assert BUF.exists(), "run `make install`"


def test_a_compatible_change_passes(repo):
    commit_protos(repo, "  string order_id = 1;\n  string note = 2;\n  int64 amount_minor = 3;", "add a field")
    ran = check(repo)
    assert ran.returncode == 0, ran.stderr
    assert "no unaccepted breaking change against HEAD~1" in ran.stdout


def test_a_breaking_change_fails_and_names_itself(repo):
    commit_protos(repo, "  string order_id = 1;", "drop the note")
    ran = check(repo)
    assert ran.returncode == 1
    assert 'shop/v1/order.proto: FIELD_NO_DELETE: Previously present field "2" with name "note"' in ran.stderr


def test_an_accepted_break_passes_and_is_shown(repo):
    commit_protos(repo, "  string order_id = 1;", "drop the note")
    (repo / "protos" / "breaking-accepted.yaml").write_text(ACCEPTED, encoding="utf-8")
    ran = check(repo)
    assert ran.returncode == 0, ran.stderr
    assert "accepted (breaking-accepted.yaml): shop/v1/order.proto: FIELD_NO_DELETE" in ran.stdout
    # The acceptance covers that one finding, not the rule: another deletion still fails.
    commit_protos(repo, "  reserved 2;", "drop the order id too")
    ran = check(repo, "--against", "HEAD~2")
    assert ran.returncode == 1 and '"1" with name "order_id"' in ran.stderr and '"note"' not in ran.stderr


def test_an_accepted_entry_without_a_reason_is_refused(repo):
    commit_protos(repo, "  string order_id = 1;", "drop the note")
    (repo / "protos" / "breaking-accepted.yaml").write_text(ACCEPTED.replace("    why: the note moved elsewhere.\n",
                                                                             ""), encoding="utf-8")
    ran = check(repo)
    assert ran.returncode == 1 and "needs rule, path, message and a why" in ran.stderr


def test_a_previous_commit_that_cannot_be_read_fails_loudly(repo):
    ran = check(repo, "--against", "no-such-branch")
    assert ran.returncode == 1 and "cannot read no-such-branch" in ran.stderr and "not a shallow clone" in ran.stderr


def test_outside_a_git_repository_it_fails_loudly(tmp_path):
    ran = check(tmp_path)
    assert ran.returncode == 1 and "not a git work tree" in ran.stderr


def test_a_shallow_clone_says_the_check_did_not_run(repo, tmp_path):
    commit_protos(repo, "  string order_id = 1;", "drop the note")
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow)], env=GIT_ENV, check=True,
                   capture_output=True, timeout=60)
    ran = check(shallow)
    assert ran.returncode == 0, ran.stderr
    assert "NOT RUN" in ran.stdout and "shallow clone" in ran.stdout and "git fetch --deepen=1" in ran.stdout


def test_the_first_commit_has_nothing_to_compare_with(repo):
    ran = check(repo)
    assert ran.returncode == 0, ran.stderr
    assert "HEAD is the first commit" in ran.stdout
