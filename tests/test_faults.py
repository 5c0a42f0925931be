"""A build that fails, is interrupted or runs out of space at any stage leaves the host as it was.

Faults are real: a host tool replaced on PATH by one that fails or hangs, a
Python module that raises or hangs, a tmpfs too small for the work folder or
the output. After each: a non-zero exit, one line naming the stage, and no
loop device, mount, temporary file, child process, ledger or output left.
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from hotsauce.events import Stage
from tests.faults.checks import assert_nothing_left, leftovers_under, processes_rooted_under
from tests.faults.plugin import record_outcome
from tests.faults.projects import write_project
from tests.faults.running import hotsauce_env, run_and_signal
from tests.faults.scene import Scene, make_scene
from tests.faults.shims import path_with, shim_folder, started_marker
from tests.filesystems import small_tmpfs
from tests.images import run_hotsauce

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class FaultPoint:
    label: str  # the row of the outcome table
    stage: Stage  # the stage the one-line reason must name
    tool: str | None  # the host tool shimmed there; None: a Python module ('boom' or 'sleepy')


POINTS = [
    FaultPoint("allocation: partition", Stage.DISK, "sfdisk"),
    FaultPoint("allocation: attach", Stage.DISK, "losetup"),
    FaultPoint("formatting", Stage.FORMAT, "mkfs.ext4"),
    FaultPoint("mounting", Stage.MOUNT, "mount"),
    FaultPoint("base", Stage.BASE, "tar"),
    FaultPoint("modules: python", Stage.MODULES, None),
    FaultPoint("output: convert", Stage.CONVERT, "qemu-img"),
    FaultPoint("compression", Stage.PUBLISH, "pigz"),
]
FAULTS = {"failure": None, "SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


def checked(
    scene: Scene,
    result: subprocess.CompletedProcess[str],
    fault: str,
    row: str,
    held_before: frozenset[str] = frozenset(),
) -> str:
    """Run the after-fault checks, putting the outcome in the suite's table either way."""
    try:
        reason = assert_nothing_left(
            result,
            scratch=scene.scratch,
            work=scene.work,
            output=scene.output,
            run_dir=scene.run_dir,
            held_before=held_before,
        )
    except AssertionError:
        record_outcome(fault, row, f"exit {result.returncode}, NOT CLEAN")
        raise
    record_outcome(fault, row, f"exit {result.returncode}, clean")
    return reason


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("point", POINTS, ids=[p.label for p in POINTS])
def test_a_fault_at_any_stage_exits_non_zero_with_one_line_and_leaves_nothing(
    tmp_path: Path, point: FaultPoint, fault: str
) -> None:
    sig = FAULTS[fault]
    if point.tool is None:
        scene = make_scene(tmp_path, ["boom" if sig is None else "sleepy"])
        marker, env = tmp_path / "module.started", scene.env()
    else:
        scene = make_scene(tmp_path, [])
        shims = shim_folder(tmp_path / "shims", point.tool, "fail" if sig is None else "hang")
        marker, env = started_marker(shims, point.tool), scene.env(PATH=path_with(shims))
    env["HOTSAUCE_TEST_MARKER"] = str(marker)
    args = scene.build_args("-x")
    if sig is None:
        result = run_hotsauce(*args, cwd=scene.project, env=env, timeout=300)
    else:
        result = run_and_signal(args, cwd=scene.project, env=hotsauce_env(env), marker=marker, sig=sig)
    reason = checked(scene, result, fault, point.label)
    if sig is None:
        assert reason.startswith(f"hotsauce: {point.stage}: "), reason
        assert f"!!! {point.stage} failed after" in result.stderr  # the stage's own bracket saw it fail
        if point.tool is None:
            assert reason.endswith("module 'boom' failed: RuntimeError: injected failure in a module "
                                   "(at boom.py:2: raise RuntimeError(\"injected failure in a module\"))")
        assert result.returncode == 1
    else:
        assert reason == f"hotsauce: {point.stage}: interrupted by {sig.name}; everything held was released"
        assert result.returncode == 130


def test_a_full_output_folder_fails_the_build_saying_so(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, ["fill"])
    with small_tmpfs(scene.output.parent, "8M"):
        held_before = frozenset(leftovers_under(tmp_path))
        result = run_hotsauce(
            *scene.build_args(), cwd=scene.project, env=scene.env(HOTSAUCE_TEST_FILL_MB="24"), timeout=300
        )
        reason = checked(scene, result, "ENOSPC", "output: convert", held_before)
    assert reason.startswith("hotsauce: convert: ")
    assert f"the output folder {scene.output.parent} is full" in reason


def test_a_full_work_folder_fails_the_build_saying_so(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, ["fill"])
    with small_tmpfs(scene.work, "48M"):
        held_before = frozenset(leftovers_under(tmp_path))
        result = run_hotsauce(
            *scene.build_args(), cwd=scene.project, env=scene.env(HOTSAUCE_TEST_FILL_MB="80"), timeout=300
        )
        reason = checked(scene, result, "ENOSPC", "modules: python", held_before)
    assert f"the work folder {scene.work} is full" in reason or "the folder holding the image is full" in reason


ANSIBLE_FAULT_ROLES = {
    "failing": "- name: This task fails on purpose\n  ansible.builtin.fail:\n    msg: injected failure in a role\n",
    "hanging": (
        "- name: A long task the build is interrupted in\n"
        "  ansible.builtin.shell: touch /tmp/hotsauce-role-started && exec sleep 300\n"
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_in_an_ansible_role_exits_non_zero_and_leaves_nothing(
    tmp_path: Path, fault: str, debian_rootfs_tarball: Path
) -> None:
    sig = FAULTS[fault]
    role = "failing" if sig is None else "hanging"
    scene = make_scene(tmp_path, [])
    write_project(scene.project, debian_rootfs_tarball, [role])
    tasks = scene.project / "roles" / role / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text(ANSIBLE_FAULT_ROLES[role])
    args: list[str | Path] = ["build", "-s", "2G", "-o", scene.output, "--work-dir", scene.work, "--no-cache"]
    if sig is None:
        result = run_hotsauce(*args, cwd=scene.project, env=scene.env(), timeout=300)
    else:
        marker = scene.work / "*" / "root" / "tmp" / "hotsauce-role-started"
        result = run_and_signal(args, cwd=scene.project, env=hotsauce_env(scene.env()), marker=marker, sig=sig)
    reason = checked(scene, result, fault, "modules: ansible")
    assert processes_rooted_under(scene.scratch) == []
    if sig is None:
        tasks = scene.project / "roles" / "failing" / "tasks" / "main.yml"
        assert f"module 'failing' failed: task 'This task fails on purpose' (role failing, {tasks}:1): " \
               "injected failure in a role; events: " in reason, reason
        events = Path(reason.rsplit("events: ", 1)[1])
        assert events.name == "job_events" and events.parent.name.startswith("ansible-"), reason
    else:
        assert reason == f"hotsauce: modules: interrupted by {sig.name}; everything held was released"
