"""The workshop labs' shape, cheaply (``make test-labs`` runs their commands): every lab has the sections a
lab needs, answers folded, and every shell block is either run by the tests or opted out with a reason."""

from __future__ import annotations

import re

import pytest

from tests.labs.labdoc import LABS_DIR, REQUIRED_SECTIONS, labs, parse

LABS = labs()


def test_there_are_eight_labs_in_the_index():
    assert len(LABS) >= 8
    index = (LABS_DIR / "README.md").read_text(encoding="utf-8")
    for lab in LABS:
        row = next((line for line in index.splitlines() if f"]({lab.path.name})" in line), None)
        assert row is not None, f"README.md does not link {lab.path.name}"
        assert re.search(r"\d+ min", row), f"README.md gives no time for {lab.path.name}: {row}"
    assert "Prerequisites" in index


@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_a_lab_has_every_section(lab):
    missing = [s for s in REQUIRED_SECTIONS if s not in lab.sections]
    assert not missing, f"{lab.path.name} lacks the sections {missing}"
    text = lab.path.read_text(encoding="utf-8")
    answers = text.split("## Answers", 1)[1]
    assert answers.count("<details>") >= 2, f"{lab.path.name}: fold each answer in <details>"
    exercises = text.split("## Exercises", 1)[1].split("\n## ", 1)[0]
    assert 2 <= len(re.findall(r"^\d+\. ", exercises, flags=re.M)) <= 3, f"{lab.path.name}: 2-3 exercises"
    seen = text.split("## What you should see", 1)[1].split("\n## ", 1)[0]
    assert "```text" in seen or "](img/" in seen, f"{lab.path.name}: What you should see shows no output"
    assert re.search(r"^\*\*Time:\*\* \d+ min", text, flags=re.M), f"{lab.path.name}: say how long it takes"


@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_every_shell_block_runs_or_says_why_not(lab):
    for block in lab.shell_blocks:
        assert block.kind, f"{block.where}: mark a shell block '# lab: run', '# lab: docker' or '# lab: skip -- why'"
        if block.kind == "skip":
            assert len(block.reason) >= 10, f"{block.where}: a skipped block says why (got {block.reason!r})"
    assert any(b.kind == "run" for b in lab.shell_blocks), f"{lab.path.name} runs nothing"
    reset = lab.path.read_text(encoding="utf-8").split("## Reset", 1)[1].split("\n## ", 1)[0]
    assert "# lab: run" in reset, f"{lab.path.name}: the Reset step is run by the tests too"


def test_pictures_exist_and_three_are_snapshots():
    pictures = set()
    for lab in LABS:
        for name in re.findall(r"\]\((img/[^)]+\.png)\)", lab.path.read_text(encoding="utf-8")):
            assert (LABS_DIR / name).is_file(), f"{lab.path.name} shows {name}, which does not exist"
            pictures.add(name)
    assert len({p for p in pictures if "tsdemo-" in p}) >= 3, "the labs show at least three dashboard snapshots"


def test_the_parser_reads_markers(tmp_path):
    path = tmp_path / "01-x.md"
    path.write_text("# Lab\n## Steps\n```bash\n# lab: run timeout=60 exit=1\n# expect: lost 0\nfalse\n```\n"
                    "```sh\n# lab: skip -- needs a cluster\nkubectl apply\n```\n```bash\necho hi\n```\n")
    lab = parse(path)
    run, skip, bare = lab.shell_blocks
    assert (run.kind, run.timeout, run.exit, run.expect, run.line) == ("run", 60, 1, ["lost 0"], 3)
    assert (skip.kind, skip.reason) == ("skip", "needs a cluster")
    assert bare.kind == ""
