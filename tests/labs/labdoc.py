"""The workshop labs (``docs/labs/*.md``) as the tests read them: sections and shell blocks.

A shell block (fenced ``bash``, ``sh`` or ``shell``) starts with one marker line:

* ``# lab: run`` runs in ``make test-labs``; options ``timeout=SECONDS`` (default 300) and ``exit=N``
  (the exit status the step must end with, default 0); ``# expect: REGEX`` lines right after it are
  claims its output must match (Python regex, searched line by line with re.MULTILINE);
* ``# lab: docker`` runs like ``run``, but only where a Docker engine answers (``make test-containers``
  brings one up);
* ``# lab: skip -- REASON`` is never run, and the reason says why (a human at the keyboard, a cluster,
  a Grafana server).

Output shown to the reader goes in ``text`` blocks, which are not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

LABS_DIR = Path(__file__).resolve().parents[2] / "docs" / "labs"
SHELL_LANGUAGES = {"bash", "sh", "shell"}
REQUIRED_SECTIONS = ("Goal", "Steps", "What you should see", "What happened", "Exercises", "Reset", "Answers")
_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^# lab: (?P<kind>run|docker|skip)(?P<rest>.*)$")
_EXPECT = re.compile(r"^# expect: (?P<regex>.+)$")


class LabFormatError(ValueError):
    """A lab file the tests cannot read."""


@dataclass
class Block:
    lab: str
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    kind: str = ""  # run, docker or skip; "" when the marker is missing
    reason: str = ""
    timeout: float = 300.0
    exit: int = 0
    expect: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.lab}:{self.line}"


@dataclass
class Lab:
    path: Path
    title: str
    sections: list[str]
    blocks: list[Block]

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def shell_blocks(self) -> list[Block]:
        return [b for b in self.blocks if b.language in SHELL_LANGUAGES]


def _marker(block: Block) -> None:
    lines = block.code.splitlines()
    match = _MARKER.match(lines[0].strip()) if lines else None
    if match is None:
        return
    block.kind, rest = match.group("kind"), match.group("rest").strip()
    if block.kind == "skip":
        block.reason = rest.removeprefix("--").strip()
        return
    for option in rest.split():
        key, _, value = option.partition("=")
        if key == "timeout" and value:
            block.timeout = float(value)
        elif key == "exit" and value:
            block.exit = int(value)
        else:
            raise LabFormatError(f"{block.where}: unknown option {option!r} in {lines[0]!r}")
    for line in lines[1:]:
        expect = _EXPECT.match(line.strip())
        if expect is None:
            break
        regex = expect.group("regex")
        try:
            re.compile(regex)
        except re.error as exc:
            raise LabFormatError(f"{block.where}: bad expect regex {regex!r}: {exc}") from None
        block.expect.append(regex)


def parse(path: Path) -> Lab:
    title, sections, blocks = "", [], []
    fence: Block | None = None
    body: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence, body = Block(path.name, number, opening.group(1).lower(), ""), []
        elif fence is not None and line.strip() == "```":
            fence.code = "\n".join(body) + "\n"
            _marker(fence)
            blocks.append(fence)
            fence = None
        elif fence is not None:
            body.append(line)
        elif line.startswith("# ") and not title:
            title = line[2:].strip()
        elif line.startswith("## "):
            sections.append(line[3:].strip())
    if fence is not None:
        raise LabFormatError(f"{path.name}:{fence.line}: code block never closed")
    return Lab(path, title, sections, blocks)


def labs(directory: Path = LABS_DIR) -> list[Lab]:
    """Every lab, in order (the files are numbered); the index README.md is not a lab."""
    return [parse(p) for p in sorted(directory.glob("[0-9][0-9]-*.md"))]
