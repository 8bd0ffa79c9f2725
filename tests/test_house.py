"""The house rules that a reader feels: no module over 450 lines, no function over 60.

One that must be longer says why in a comment starting `# long:` (in the function, or
in the module for the module) - docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

PORTAL = Path(__file__).resolve().parent.parent / "portal"
MODULE_LINES = 450
FUNCTION_LINES = 60
WHY = "# long:"


def modules() -> list[Path]:
    return sorted(p for p in PORTAL.rglob("*.py") if "migrations" not in p.parts)


def long_functions(path: Path) -> list[str]:
    """`path:line name (n lines)` of each function over the limit that does not say why."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assert node.end_lineno is not None
        length = node.end_lineno - node.lineno + 1
        body = lines[node.lineno - 1 : node.end_lineno]
        if length > FUNCTION_LINES and not any(WHY in line for line in body):
            found.append(f"{path.relative_to(PORTAL.parent)}:{node.lineno} {node.name} ({length})")
    return found


def test_it_keeps_every_module_under_450_lines_or_says_why() -> None:
    over = []
    for path in modules():
        text = path.read_text(encoding="utf-8")
        count = len(text.splitlines())
        if count > MODULE_LINES and WHY not in text:
            over.append(f"{path.relative_to(PORTAL.parent)} ({count})")
    assert over == []


def test_it_keeps_every_function_under_60_lines_or_says_why() -> None:
    assert [line for path in modules() for line in long_functions(path)] == []
