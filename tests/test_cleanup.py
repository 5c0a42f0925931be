"""A build killed with SIGKILL cannot clean up: its ledger lets `hotsauce cleanup` do it.

The next build warns about what a killed build left, and `hotsauce cleanup`
releases it: the child processes, chroot bind mounts, the root mount, the loop
device, the work folder and the staging folder beside -o.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from hotsauce.config import FsType
from hotsauce.errors import CommandFailed
from hotsauce.host import ledger
from hotsauce.host.mounts import loop_backing
from hotsauce.host.release import removed_meanwhile
from hotsauce.image import disk
from tests.faults.checks import leftovers_under
from tests.faults.running import hotsauce_env, start_in_background, wait_for
from tests.faults.scene import Scene, make_scene
from tests.faults.shims import path_with, shim_folder, started_marker
from tests.images import run_hotsauce
from tests.leaks import held_resources

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
    # What the build makes beside its work folder (the KVM probe's folder, Ansible's private
    # folder) is in $TMPDIR, this test run's own (conftest): nothing else of hotsauce runs there now.
    beside = [str(p) for p in Path(os.environ["TMPDIR"]).glob("hotsauce-*")]
    return leftovers_under(scene.scratch) + [str(p) for p in scene.work.iterdir()] + staging + beside


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


# --- what keeps a mount busy: a swap file turned on in the image, a process left in it ---

# Python modules that keep the image's mount busy the way a module can by mistake. Each
# writes the marker (when the test gives one) once it has done so, then waits if asked to.
BUSY_MODULES = {
    "swap_in_image": (
        "import os, pathlib, subprocess, time\n\n"
        "def modify(name, root, cfg):\n"
        "    swap = os.path.join(root, 'swapfile')\n"
        "    with open(swap, 'wb') as out:\n"
        "        out.write(bytes(16 << 20))  # written out: swapon refuses a file with holes\n"
        "    os.chmod(swap, 0o600)\n"
        "    subprocess.run(['mkswap', swap], check=True, capture_output=True)\n"
        "    subprocess.run(['swapon', swap], check=True)\n"
    ),
    "process_in_image": (
        "import os, pathlib, subprocess, time\n\n"
        "def modify(name, root, cfg):\n"
        "    subprocess.Popen(['sleep', '600'], cwd=root, start_new_session=True,\n"
        "                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    ),
}
THEN_WAIT = (
    "    if os.environ.get('HOTSAUCE_TEST_MARKER'):\n"
    "        pathlib.Path(os.environ['HOTSAUCE_TEST_MARKER']).write_text('busy')\n"
    "        time.sleep(600)\n"
)


def swap_files_under(folder: Path) -> list[str]:
    lines = Path("/proc/swaps").read_text().splitlines()[1:]
    return [line.split()[0] for line in lines if line.split()[0].startswith(str(folder))]


def processes_in(folder: Path) -> list[int]:
    """Processes whose working folder is below `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if os.readlink(entry / "cwd").startswith(str(folder)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def busy_makers_stopped(tmp_path: Path) -> Iterator[Path]:
    """Whatever the test's outcome: swap off, processes stopped, mounts and loops under tmp_path released,
    with plain commands (not hotsauce's), so a failing test leaves nothing on the host."""
    yield tmp_path
    for swap in swap_files_under(tmp_path):
        subprocess.run(["swapoff", swap], check=False)
    for pid in processes_in(tmp_path):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes_in(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    for item in sorted(held_resources(str(tmp_path)), key=len, reverse=True):
        kind, name = item.split()[:2]
        if kind == "mount":
            subprocess.run(["umount", name], check=False)
    for item in held_resources(str(tmp_path)):
        kind, name = item.split()[:2]
        if kind == "loop":
            subprocess.run(["losetup", "--detach", name], check=False)


def busy_scene(tmp_path: Path, module: str, *, then_wait: bool) -> Scene:
    scene = make_scene(tmp_path, [module])
    source = BUSY_MODULES[module] + (THEN_WAIT if then_wait else "")
    (scene.project / "python_modules" / f"{module}.py").write_text(source)
    return scene


@pytest.mark.parametrize("module", list(BUSY_MODULES))
def test_a_build_releases_its_image_mount_kept_busy_by_a_module_left_swap_file_or_process(
    busy_makers_stopped: Path, module: str
) -> None:
    scene = busy_scene(busy_makers_stopped, module, then_wait=False)

    result = run_hotsauce(*scene.build_args(), cwd=scene.project, env=scene.env(), timeout=300)

    assert result.returncode == 0, result.stderr
    assert swap_files_under(scene.scratch) == [] and processes_in(scene.scratch) == []
    assert leftovers_under(scene.scratch) == []
    assert list(scene.work.iterdir()) == [] and list(scene.run_dir.iterdir()) == []


@pytest.mark.parametrize("module", list(BUSY_MODULES))
def test_cleanup_releases_a_killed_builds_mount_kept_busy_by_a_swap_file_or_process(
    busy_makers_stopped: Path, module: str
) -> None:
    scene = busy_scene(busy_makers_stopped, module, then_wait=True)
    marker = scene.scratch / "module.started"
    kill_build_when_it_reaches(scene, marker, scene.env(HOTSAUCE_TEST_MARKER=str(marker)))
    assert swap_files_under(scene.scratch) or processes_in(scene.scratch), "nothing kept the mount busy"

    result = run_hotsauce("cleanup", cwd=scene.scratch, env=scene.env())

    assert result.returncode == 0, result.stderr
    assert "released" in result.stderr
    assert swap_files_under(scene.scratch) == [] and processes_in(scene.scratch) == []
    assert held_by_the_killed_build(scene) == []
    assert list(scene.run_dir.iterdir()) == []


def test_what_a_build_could_not_release_stays_in_its_ledger_and_cleanup_releases_it(
    busy_makers_stopped: Path,
) -> None:
    """This very process holds a file open in the mount: a holder the build must not stop."""
    run_dir, image = busy_makers_stopped / "run", busy_makers_stopped / "disk.raw"
    with ledger.recording(run_dir):
        disk.allocate(image, 64 << 20)
        partition = disk.write_partition_table(image)
        with pytest.raises(CommandFailed, match="umount"), disk.attached(image, partition) as device:
            disk.make_filesystem(device, FsType.EXT4)
            with disk.root_filesystem_mounted(device, busy_makers_stopped / "root") as root:
                busy = (root / "held-open").open("w")
    try:
        [leftover] = ledger.find_leftovers(run_dir)
        assert {holding.kind for holding in leftover.holdings} >= {ledger.Kind.MOUNT, ledger.Kind.LOOP}
    finally:
        busy.close()
    result = run_hotsauce("cleanup", cwd=busy_makers_stopped, env={"HOTSAUCE_RUN_DIR": str(run_dir)})

    assert result.returncode == 0, result.stderr
    assert f"released mount {busy_makers_stopped / 'root'}" in result.stderr
    assert held_resources(str(busy_makers_stopped)) == set()
    assert list(run_dir.iterdir()) == []


def test_mounts_a_tool_left_below_the_root_are_released_with_it(busy_makers_stopped: Path) -> None:
    """A bootstrap tool that dies mid-way (mmdebstrap on a full disk) can leave its own /proc and
    /dev/shm mounted inside the image root: the build unmounts them before the root itself."""
    run_dir, image = busy_makers_stopped / "run", busy_makers_stopped / "disk.raw"
    with ledger.recording(run_dir):
        disk.allocate(image, 64 << 20)
        partition = disk.write_partition_table(image)
        with disk.attached(image, partition) as device:
            disk.make_filesystem(device, FsType.EXT4)
            with disk.root_filesystem_mounted(device, busy_makers_stopped / "root") as root:
                for name, kind in (("proc", "proc"), ("dev", "tmpfs"), ("dev/shm", "tmpfs")):
                    (root / name).mkdir(exist_ok=True)
                    subprocess.run(["mount", "-t", kind, kind, root / name], check=True)

    assert held_resources(str(busy_makers_stopped)) == set()
    assert list(run_dir.iterdir()) == []


def test_detaching_a_loop_device_still_open_waits_until_it_is_gone(busy_makers_stopped: Path) -> None:
    """losetup --detach of an open device only marks it to go at the last close (as when the FUSE
    export behind `hotsauce shell` closes): detach_loop returns once the kernel has let it go."""
    image = busy_makers_stopped / "disk.raw"
    disk.allocate(image, 64 << 20)
    device = Path(subprocess.run(["losetup", "--find", "--show", image], capture_output=True, text=True,
                                 check=True).stdout.strip())
    holder = os.open(device, os.O_RDONLY)
    closer = threading.Timer(0.5, os.close, [holder])
    closer.start()
    try:
        disk.detach_loop(device)
        assert loop_backing(device) is None
    finally:
        closer.join()


def test_a_file_removed_meanwhile_is_gone_once_the_body_is_done_and_the_thread_with_it(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as disk_file:
        disk_file.truncate(64 << 20)
        disk_file.write(b"data" * 4096)
    ran = []
    with removed_meanwhile(raw):
        ran.append(True)
    assert ran and not raw.exists()
    assert "hotsauce-remove" not in {thread.name for thread in threading.enumerate()}
    with removed_meanwhile(raw):  # already gone: nothing to say
        pass
