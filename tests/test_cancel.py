"""A library caller cancels a real build from another thread (build(cancel=...)).

The build runs in a worker thread, where no signal handler can reach it;
the test thread cancels it while an Ansible task sleeps in the image.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hotsauce.build import build
from hotsauce.config import BuildOptions, load_config
from hotsauce.errors import BuildCancelled
from hotsauce.events import Event, EventKind, Stage
from hotsauce.host.ledger import RUN_DIR_ENV
from tests.faults.checks import leftovers_under, processes_rooted_under
from tests.faults.projects import write_project

pytestmark = pytest.mark.integration

SLEEPER_ROLE = Path(__file__).parent / "data" / "ansible" / "roles" / "sleeper"


def children_of(pid: int) -> list[str]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(stat.parent.name)
    return found


def wait_until(condition: Callable[[], object], what: str, timeout: float, worker: threading.Thread) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.is_alive(), f"the build ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout}s"
        time.sleep(0.2)


def test_a_build_cancelled_from_another_thread_during_its_modules_leaves_nothing(
    tmp_path: Path, debian_rootfs_tarball: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, work, output = tmp_path / "run", tmp_path / "work", tmp_path / "out" / "set"
    monkeypatch.setenv(RUN_DIR_ENV, str(run_dir))
    for folder in (work, output.parent):
        folder.mkdir(parents=True)
    project = write_project(tmp_path / "project", debian_rootfs_tarball, ["sleeper"])
    shutil.copytree(SLEEPER_ROLE, project / "roles" / "sleeper")
    options = BuildOptions(size=2 << 30, output=output, work_dir=work, use_cache=False)
    events: list[Event] = []
    stop = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            build(load_config(project / "build.yaml"), options, events.append, cancel=stop.is_set)
        except BaseException as error:
            raised.append(error)

    worker = threading.Thread(target=run, name="build")
    worker.start()
    try:
        wait_until(lambda: processes_rooted_under(work), "task running in the image", 600, worker)
        stop.set()
        cancelled_at = time.monotonic()
        worker.join(timeout=120)
        stopped_after = time.monotonic() - cancelled_at
    finally:
        stop.set()
        worker.join()
    assert stopped_after < 60, "the build waited for the task (300 s) to end instead of cancelling it"
    [error] = raised
    assert isinstance(error, BuildCancelled) and error.stage is Stage.MODULES, error
    assert str(error) == "modules: cancelled; everything held was released"
    assert [e.stage for e in events if e.kind is EventKind.STAGE_FAILED] == [Stage.MODULES]
    assert leftovers_under(tmp_path) == []  # loop devices, mounts, processes naming our folders
    assert processes_rooted_under(tmp_path) == [] and children_of(os.getpid()) == []
    assert list(work.iterdir()) == [] and list(output.parent.iterdir()) == []
    assert list(run_dir.glob("*.json")) == []
