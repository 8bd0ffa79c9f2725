"""The transcripts in docs/operator.md are what the commands print, exactly.

Each ```console block is a shell session: `$ cat FILE` with its content writes the file,
`$ [NAME=value ...] portal ARGS` runs the real command and must print the lines that follow
(stderr, then stdout). All blocks run in order in one fresh instance folder that holds
docs/incident.example.toml as incident.toml.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.test_cli import environment

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```console\n(.*?)^```$", re.S | re.M)


@dataclass(frozen=True)
class Step:
    command: str
    output: str


def transcript(markdown: str) -> list[Step]:
    steps: list[Step] = []
    for block in BLOCK.findall(markdown):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            steps.append(Step(command, output))
    return steps


STEPS = transcript((DOCS / "operator.md").read_text(encoding="utf-8"))


def test_it_finds_the_transcripts() -> None:
    commands = [step.command for step in STEPS]
    assert "portal incident load incident.toml" in commands
    assert any("--dry-run" in command for command in commands)
    assert sum(command.startswith("cat ") for command in commands) >= 4


def run(folder: Path, command: str) -> str:
    words = shlex.split(command)
    extra = {}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        extra[name] = value
    assert words[0] == "portal", command
    result = subprocess.run(
        [sys.executable, "-m", "portal", *words[1:]],
        cwd=folder,
        env=environment(folder / "instance", None) | extra,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.stderr + result.stdout


def test_it_prints_what_the_operator_guide_shows(tmp_path: Path) -> None:
    shutil.copy(DOCS / "incident.example.toml", tmp_path / "incident.toml")
    for step in STEPS:
        if step.command.startswith("cat "):
            (tmp_path / step.command.removeprefix("cat ")).write_text(step.output, encoding="utf-8")
            continue
        printed = run(tmp_path, step.command)
        assert printed == step.output, f"$ {step.command}\n{printed}"
