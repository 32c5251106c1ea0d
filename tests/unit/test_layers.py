"""The layering rule: the sans-IO core imports no I/O framework.

Checked on the source (every import statement of every module under
``wsproto_trio/core``, and what they import from this package in turn), so the
rule holds whatever happens to be imported already in the test process.
"""

from __future__ import annotations

import ast
from pathlib import Path

import wsproto_trio

PACKAGE = Path(wsproto_trio.__file__).parent
FORBIDDEN = {"trio", "quart", "quart_trio", "hypercorn", "redis", "trio_websocket", "jwt"}


def imports(path: Path) -> set[str]:
    """Top-level names of absolute imports, and package modules of relative ones."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            else:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                target = base.joinpath(*(node.module or "").split(".")) if node.module else base
                for candidate in (target.with_suffix(".py"), target / "__init__.py"):
                    if candidate.exists():
                        found.add(str(candidate))
                if node.module is None:
                    for alias in node.names:
                        module = (base / alias.name).with_suffix(".py")
                        if module.exists():
                            found.add(str(module))
    return found


def reachable(start: list[Path]) -> dict[Path, set[str]]:
    seen: dict[Path, set[str]] = {}
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        names = imports(path)
        seen[path] = {n for n in names if not n.startswith("/")}
        todo.extend(Path(n) for n in names if n.startswith("/"))
    return seen


def test_core_imports_no_io_framework() -> None:
    core = sorted((PACKAGE / "core").glob("*.py"))
    assert core, "no core modules found"
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(names & FORBIDDEN)
        for path, names in reachable(core).items()
        if names & FORBIDDEN
    }
    assert offenders == {}


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import trio\nfrom redis import Redis\n")
    assert {"trio", "redis"} <= imports(module)
