"""The GitLab double knows no well-known token, and no doc tells anyone to start it on every
interface or to put its token on a command line (issue 24, item 7; docs/security/README.md)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OLD_TOKEN = "sim-" + "admin-token"  # the fixed admin token the double knew until ADR-018
STARTS_THE_DOUBLE = re.compile(r"gitlab_double\b.*(--host[ =]0\.0\.0\.0|--token[ =])|--host[ =]0\.0\.0\.0.*gitlab_double")


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60).stdout
    paths = [REPO / name for name in listed.decode().split("\0") if name]
    return [p for p in paths if p.is_file() and not p.is_symlink() and b"\0" not in p.read_bytes()[:4096]]


def test_no_file_holds_the_old_well_known_admin_token() -> None:
    holders = [str(p.relative_to(REPO)) for p in _tracked_text_files() if OLD_TOKEN.encode() in p.read_bytes()]
    assert holders == []


def test_no_doc_starts_the_double_on_every_interface_or_with_a_token_in_argv() -> None:
    docs = [p for p in _tracked_text_files() if p.suffix in {".md", ".yaml", ".yml", ".sh", ""} or p.parent.name == "scripts"]
    found = [f"{p.relative_to(REPO)}:{n}" for p in docs for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
             if STARTS_THE_DOUBLE.search(line)]  # fmt: skip
    assert found == []
