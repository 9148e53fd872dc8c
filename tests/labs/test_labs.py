"""Every workshop lab's commands, run in order against a real local stack (``make test-labs``; marker ``labs``).

The labs run in a copy of the repository (its tracked files, with the virtualenv and artifact cache linked),
so a lab that edits code or writes ``.tsdemo/`` touches nothing of the checkout; the stack listens on free
ports, which the labs' commands follow through the ``TSDEMO_*`` variables they read. Labs share one stack in
file order, as a workshop room does: each lab starts it if it is not running, and the test stops it at the end.

Each ``# lab: run`` block runs as ``bash -euo pipefail`` from the copy's root and must end with its ``exit=``
status (0) within its ``timeout=``; each ``# expect:`` claim must match its output. ``# lab: docker`` blocks run
only where a Docker engine answers; ``# lab: skip`` blocks never. Set ``TSDEMO_LABS_OUTPUT`` to a directory to
keep every block's output there (the labs' "What you should see" excerpts are taken from such runs).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.servers import free_port
from tests.labs.labdoc import Block, Lab, labs

REPO = Path(__file__).resolve().parents[2]
LABS = labs()


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Workshop:
    """A copy of the repository where the labs run, with its environment."""

    def __init__(self, root: Path, output: Path | None) -> None:
        self.root = root
        self.output = output
        ports = {name: free_port() for name in ("MQTT", "KAFKA", "KAFKA_CONTROLLER", "INFLUX")}
        # The ports the labs choose themselves (a second bridge's health port, lab 7's broker) have defaults
        # a reader's machine has free; the test moves them out of the way of anything running here.
        self.env = {
            **os.environ,
            "PATH": f"{root / '.venv' / 'bin'}:{os.environ['PATH']}",
            "PYTHONPATH": str(root),
            "VIRTUAL_ENV": str(root / ".venv"),
            **{f"TSDEMO_{name}_PORT": str(port) for name, port in ports.items()},
            "TSDEMO_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports['KAFKA']}",
            "TSDEMO_INFLUX_URL": f"http://127.0.0.1:{ports['INFLUX']}",
            "TSDEMO_GRAFANA": "false",
            # CI machines are shared: at a load average of 25 the Spark job took over the default 180 s to start.
            "TSDEMO_READY_TIMEOUT_S": "600",
            "BRIDGE1_PORT": str(free_port()),
            "MQTT_LOCKED_PORT": str(free_port()),
            # What lab 8's compose project publishes on the host.
            **{name: str(free_port()) for name in ("MQTT_HOST_PORT", "MQTTS_HOST_PORT", "GRAFANA_HOST_PORT")},
        }

    def run(self, lab: Lab, index: int, block: Block) -> str:
        started = time.monotonic()
        status: int | None = None
        try:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=self.root, env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=block.timeout, start_new_session=True)
            output, status = done.stdout, done.returncode
        except subprocess.TimeoutExpired as exc:
            output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        took = time.monotonic() - started
        if self.output is not None:
            folder = self.output / lab.name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{index:02d}-line{block.line}.txt").write_text(
                f"$ {block.code}\n{output}\n[exit {status}, {took:.1f}s]\n")
            for picture in (self.root / ".tsdemo" / "snapshots").glob("*.png"):  # the labs' pictures come from here
                if picture.stat().st_mtime >= time.time() - took - 1:
                    shutil.copy2(picture, folder / f"{index:02d}-{picture.name}")
        if status is None:
            pytest.fail(f"{block.where}: still running after {block.timeout:.0f}s\n{block.code}\n{_tail(output)}\n"
                        f"{self.logs()}")
        if status != block.exit:
            pytest.fail(f"{block.where}: exit {status} (wanted {block.exit}) after {took:.0f}s\n{block.code}\n"
                        f"{_tail(output)}\n{self.logs()}")
        for claim in block.expect:
            assert re.search(claim, output, flags=re.M), (
                f"{block.where}: the output does not show {claim!r}\n{block.code}\n{_tail(output)}")
        return output

    def logs(self) -> str:
        parts = []
        for log in sorted((self.root / ".tsdemo" / "logs").glob("*.log")):
            parts.append(f"--- {log.name}\n{_tail(log.read_text(errors='replace'), 15)}")
        return "\n".join(parts)

    def stop_leftovers(self) -> None:
        """What the labs started and their Reset steps left behind: found by working directory (ours)."""
        subprocess.run(["tsdemo", "down"], cwd=self.root, env=self.env, capture_output=True, timeout=300)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cwd = Path(os.readlink(proc / "cwd"))
            except OSError:
                continue
            if cwd == self.root or self.root in cwd.parents:
                try:
                    os.kill(int(proc.name), signal.SIGTERM)
                except ProcessLookupError:
                    pass


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def workshop(tmp_path_factory) -> Iterator[Workshop]:
    root = tmp_path_factory.mktemp("workshop") / "tsdemo"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file() and not source.is_symlink():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    for link in (".venv", ".cache"):
        (root / link).symlink_to((REPO / link).resolve())
    # A repository of its own, as a reader's clone is: lab 6 changes code and puts it back with git.
    git = ["git", "-c", "user.name=tsdemo labs", "-c", "user.email=labs@localhost"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "the workshop's copy"]):
        subprocess.run([*git, *command], cwd=root, check=True, capture_output=True)
    output = os.environ.get("TSDEMO_LABS_OUTPUT")
    shop = Workshop(root, Path(output).resolve() if output else None)
    try:
        yield shop
    finally:
        shop.stop_leftovers()


@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_lab(workshop, lab):
    ran = 0
    for index, block in enumerate(lab.shell_blocks):
        if block.kind == "run":
            workshop.run(lab, index, block)
            ran += 1
    assert ran, f"{lab.name}: nothing ran"


@pytest.mark.parametrize("lab", [lab for lab in LABS if any(b.kind == "docker" for b in lab.shell_blocks)],
                         ids=lambda lab: lab.name)
def test_lab_docker_steps(workshop, lab):
    """A lab's ``# lab: docker`` blocks, after its other steps, where a Docker engine answers."""
    if not _docker_answers():
        pytest.skip(f"{lab.name}: no Docker engine answers (`make test-containers` brings one up)")
    for index, block in enumerate(lab.shell_blocks):
        if block.kind == "docker":
            workshop.run(lab, index, block)
