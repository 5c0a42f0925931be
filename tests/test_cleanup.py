"""A build killed with SIGKILL cannot clean up: its ledger lets `hotsauce cleanup` do it.

The next build warns about what a killed build left, and `hotsauce cleanup`
releases it: the child processes, chroot bind mounts, the root mount, the loop
device, the work folder and the staging folder beside -o.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.checks import leftovers_under
from tests.faults.running import hotsauce_env, start_in_background, wait_for
from tests.faults.scene import Scene, make_scene
from tests.faults.shims import path_with, shim_folder, started_marker
from tests.images import run_hotsauce

pytestmark = pytest.mark.integration


def kill_build_when_it_reaches(scene: Scene, marker: Path, env: dict[str, str]) -> None:
    log = scene.scratch / "killed-build.log"
    process = start_in_background(scene.build_args(), cwd=scene.project, env=hotsauce_env(env), log=log)
    try:
        wait_for(marker, process, timeout=120)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def held_by_the_killed_build(scene: Scene) -> list[str]:
    staging = [p.name for p in scene.output.parent.iterdir() if p.name.startswith(f".{scene.output.name}.partial-")]
    return leftovers_under(scene.scratch) + [str(p) for p in scene.work.iterdir()] + staging


def kill_in_modules(tmp_path: Path) -> Scene:
    """Killed while a Python module runs: root mounted, /proc /sys /dev bound below it."""
    scene = make_scene(tmp_path, ["sleepy"])
    marker = tmp_path / "module.started"
    kill_build_when_it_reaches(scene, marker, scene.env(HOTSAUCE_TEST_MARKER=str(marker)))
    return scene


def kill_in_base(tmp_path: Path) -> Scene:
    """Killed while tar unpacks the base: a child process outlives the build."""
    scene = make_scene(tmp_path, [])
    shims = shim_folder(tmp_path / "shims", "tar", "hang")
    kill_build_when_it_reaches(scene, started_marker(shims, "tar"), scene.env(PATH=path_with(shims)))
    return scene


@pytest.mark.parametrize("kill", [kill_in_modules, kill_in_base], ids=["in modules", "in base"])
def test_cleanup_releases_everything_a_sigkilled_build_held(tmp_path: Path, kill: Callable[[Path], Scene]) -> None:
    scene = kill(tmp_path)
    assert held_by_the_killed_build(scene), "the kill left nothing: the test proves nothing"

    result = run_hotsauce("cleanup", cwd=tmp_path, env=scene.env())

    assert result.returncode == 0, result.stderr
    assert "released" in result.stderr
    assert held_by_the_killed_build(scene) == []
    assert list(scene.run_dir.iterdir()) == []


def test_the_next_build_warns_about_what_a_killed_build_left(tmp_path: Path) -> None:
    scene = kill_in_modules(tmp_path)
    try:
        (scene.project / "build.yaml").write_text((scene.project / "build.yaml").read_text() + "  - no_such_module\n")
        result = run_hotsauce(*scene.build_args(), cwd=scene.project, env=scene.env())
        assert result.returncode == 2, result.stderr
        assert "ended without releasing" in result.stderr and "hotsauce cleanup" in result.stderr
    finally:
        run_hotsauce("cleanup", cwd=tmp_path, env=scene.env())
    assert held_by_the_killed_build(scene) == []


def test_cleanup_leaves_a_running_build_alone(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, ["sleepy"])
    marker = tmp_path / "module.started"
    env = hotsauce_env(scene.env(HOTSAUCE_TEST_MARKER=str(marker)))
    process = start_in_background(scene.build_args(), cwd=scene.project, env=env, log=tmp_path / "build.log")
    try:
        wait_for(marker, process, timeout=120)
        result = run_hotsauce("cleanup", cwd=tmp_path, env=scene.env())
        assert result.returncode == 0 and "nothing to clean up" in result.stderr
        assert process.poll() is None and held_by_the_killed_build(scene)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 130
    assert held_by_the_killed_build(scene) == []
