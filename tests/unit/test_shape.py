"""The code's shape, checked (ISSUE 19, item 7): no function in agent/ above radon's cyclomatic
complexity 20, and the import boundaries hold:

- tui/ sees the agent only through the wire schema and the socket client
  (autogit.agent.api.schema, autogit.agent.api.client), never its internals;
- the pure core (the planner, the matching rules, the model, the tag vocabulary, the fleet and
  scenarios) imports no adapter: no GitLab, runtime, reconciler, daemon or API module, and no
  library that talks to the outside (docker, requests, gitlab, aiohttp, httpx), not even
  through another module of the agent;
- the reconciler and the daemon see the runtime only through its Protocol (agent/runtime/base.py)
  and the registry (agent/runtime/__init__.py), never the Docker implementation.
"""

from __future__ import annotations

import ast
from pathlib import Path

from radon.complexity import cc_visit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "autogit"
MAX_COMPLEXITY = 20
TUI_ALLOWED = {"autogit.agent.api.schema", "autogit.agent.api.client"}
PURE_CORE = ["planner", "matching", "model", "tags", "fleet", "scenario", "errors", "backoff"]
ADAPTERS = ("autogit.agent.gitlab", "autogit.agent.runtime", "autogit.agent.reconciler", "autogit.agent.daemon", "autogit.agent.api",
            "autogit.agent.inventory", "autogit.agent.systemd")  # fmt: skip
OUTSIDE = ("docker", "requests", "gitlab", "aiohttp", "httpx", "pynvml", "subprocess", "socket")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in it (absolute names; `from . import x` resolved)."""
    tree = ast.parse(path.read_text())
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            out.add(prefix)
            out |= {f"{prefix}.{a.name}" for a in node.names}
    return out


def _agent_files() -> dict[str, Path]:
    return {_module_name(p): p for p in (ROOT / "agent").rglob("*.py")}


def test_no_function_in_agent_is_above_complexity_20():
    over = []
    for path in sorted((ROOT / "agent").rglob("*.py")):
        for block in cc_visit(path.read_text()):
            for item in [block, *getattr(block, "methods", [])]:
                if type(item).__name__ == "Function" and item.complexity > MAX_COMPLEXITY:
                    over.append(f"{path.relative_to(ROOT)}:{item.lineno} {item.fullname} ({item.complexity})")
    assert over == [], "split these into named steps:\n" + "\n".join(over)


def test_the_tui_imports_only_the_wire_schema_and_the_client():
    for path in sorted((ROOT / "tui").rglob("*.py")):
        foreign = {m for m in _imports(path) if m.startswith("autogit.") and not m.startswith("autogit.tui")}
        # `from autogit.agent.api.schema import X` yields the module and module.X.
        assert {m for m in foreign if not any(m == a or m.startswith(a + ".") for a in TUI_ALLOWED)} == set(), path


def test_the_pure_core_imports_no_adapter_even_indirectly():
    files = _agent_files()
    for start in PURE_CORE:
        seen: set[str] = set()
        stack = [f"autogit.agent.{start}"]
        while stack:
            name = stack.pop()
            if name in seen or name not in files:
                continue
            seen.add(name)
            for imported in _imports(files[name]):
                assert not imported.startswith(ADAPTERS), f"{start} reaches {imported} through {name}"
                assert imported.split(".")[0] not in OUTSIDE, f"{start} reaches {imported} through {name}"
                stack.append(imported)


def test_the_reconciler_and_daemon_see_only_the_runtime_protocol():
    files = _agent_files()
    users = [n for n in files if n.startswith("autogit.agent.reconciler") or n == "autogit.agent.daemon"]
    assert len(users) >= 5
    for name in users:
        imports = _imports(files[name])
        assert not any(m.startswith("autogit.agent.runtime.docker") for m in imports), name
        assert "docker" not in {m.split(".")[0] for m in imports}, name
