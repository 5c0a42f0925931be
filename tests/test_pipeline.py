"""The build's orchestration without root: commands in pipeline order, stages, release in reverse.

The host's device tools are answered by a recorder (tests/recorded_commands.py);
the base really unpacks into a plain folder and the Python module really runs.
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from hotsauce.build import BuildResult, build
from hotsauce.config import BuildOptions, load_config
from hotsauce.errors import BuildCancelled, BuildFailed, ModuleFailed
from hotsauce.events import Event, EventKind, Stage
from hotsauce.host import proc
from hotsauce.host.ledger import RUN_DIR_ENV
from hotsauce.modules.ansible_plugins.connection.hotsauce_chroot import state_folder
from hotsauce.modules.python_run import CHILD_MODULE
from hotsauce.store.cache import CACHE_ENV
from tests.faults.projects import tiny_root_tarball, write_project
from tests.recorded_commands import FAKE_DEVICE, CommandRecorder, is_qemu

REPO = Path(__file__).resolve().parent.parent
SIZE = 128 << 20
# The one partition of a 128 MiB disk: from 1 MiB to the end.
PARTITION = "--offset 1048576 --sizelimit 133169152"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

PYTHON_MODULES = {
    "stamp": "from hotsauce.rootpath import inside\n\n"
             "def modify(name, root, cfg):\n"
             "    inside(root, '/etc/stamp').write_text(name + '\\n')\n",
    "disk_full": "import errno, os\n\n"
                 "def modify(name, root, cfg):\n"
                 "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n",
    # Stands for a caller in another thread cancelling while modules run.
    "cancel_now": "import os, pathlib\n\n"
                  "def modify(name, root, cfg):\n"
                  "    pathlib.Path(os.environ['HOTSAUCE_TEST_CANCEL']).touch()\n",
}


@dataclass(frozen=True)
class Scene:
    project: Path
    work_dir: Path
    output: Path
    cancel_marker: Path

    def options(self, **changes: object) -> BuildOptions:
        settings: dict[str, object] = {"size": SIZE, "output": self.output, "work_dir": self.work_dir,
                                       "use_cache": False, "cache_dir": self.project.parent / "cache"}
        return BuildOptions(**(settings | changes))  # type: ignore[arg-type]


@pytest.fixture
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scene:
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # nothing of a test build in the default cache
    marker = tmp_path / "cancel-requested"
    monkeypatch.setenv("HOTSAUCE_TEST_CANCEL", str(marker))
    project = write_project(tmp_path / "project", tiny_root_tarball(tmp_path / "tiny-root.tar"), [])
    for name, source in PYTHON_MODULES.items():
        (project / "python_modules" / f"{name}.py").write_text(source)
    for folder in (tmp_path / "work", tmp_path / "out"):
        folder.mkdir()
    return Scene(project, tmp_path / "work", tmp_path / "out" / "set", marker)


def with_modules(scene: Scene, modules: list[str]) -> Path:
    config = scene.project / "build.yaml"
    text = config.read_text().split("modules:")[0]
    config.write_text(text + "modules:\n" + "".join(f"  - {name}\n" for name in modules))
    return config


def recorded_build(scene: Scene, modules: list[str], recorder: CommandRecorder, events: list[Event],
                   **options: object) -> BuildResult:
    config = load_config(with_modules(scene, modules))
    with proc.commands_answered_by(recorder):
        return build(config, scene.options(**options), events.append, cancel=scene.cancel_marker.exists)


def work_folder(recorder: CommandRecorder) -> Path:
    """The build's temporary folder: where the first command found the image."""
    return Path(recorder.commands[0][-1]).parent


def holdings_left(recorder: CommandRecorder) -> list[str]:
    """Replay the commands: what was attached and mounted, checking each release undoes the
    newest holding (reverse order). Returns what is still held at the end."""
    held: list[str] = []
    for line in recorder.transcript():
        if recorder.failing is not None and line.startswith(recorder.failing):
            continue  # it took nothing
        words = line.split()
        if words[0] == "losetup" and "--find" in words:
            held.append(FAKE_DEVICE)
        elif words[0] == "mount" and not any(word.startswith("remount") for word in words):
            held.append(words[-1])
        elif words[0] == "unshare":  # the sandbox's network namespace, kept by a bind mount
            held.append(words[1].split("=", 1)[1])
        elif words[0] in ("umount", "losetup"):
            assert held and held[-1] == words[-1], f"{line!r} while {held} were held: not in reverse order"
            held.pop()
    return held


def stage_events(events: list[Event], kind: EventKind) -> list[str]:
    return [event.stage for event in events if event.kind is kind]


def test_a_download_build_runs_each_device_command_in_pipeline_order(scene: Scene) -> None:
    recorder, events = CommandRecorder(), list[Event]()
    result = recorded_build(scene, ["stamp"], recorder, events, reproducible=True)
    work = work_folder(recorder)
    staging = scene.output.parent / f".{scene.output.name}.partial-{os.getpid()}"
    # UUIDs derived from the inputs (hotsauce.image.reproducible) are checked there, not here.
    sandbox = Path(state_folder(str(work / "root")))
    recorded = recorder.transcript(WORK=work, STAGING=staging, SANDBOX=sandbox)
    transcript = [UUID.sub("UUID", line) for line in recorded]
    assert transcript == [
        "sfdisk --quiet --no-reread --no-tell-kernel WORK/disk.raw",
        "sfdisk --json WORK/disk.raw",
        f"losetup --find --show {PARTITION} WORK/disk.raw",
        f"mkfs.ext4 -q -F -L root -U UUID -E hash_seed=UUID {FAKE_DEVICE}",
        f"mount -o nobarrier {FAKE_DEVICE} WORK/root",  # a root being built asks for no flushes
        "mount -t proc proc WORK/root/proc",
        "mount -t sysfs sysfs WORK/root/sys",
        "mount --bind --make-private /dev WORK/root/dev",
        "mount --bind --make-private /dev/pts WORK/root/dev/pts",
        "mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs WORK/root/run",
        "mount -t tmpfs -o mode=0700,size=64m hotsauce-sandbox SANDBOX",
        "unshare --net=SANDBOX/net true",
        "umount SANDBOX/net",
        "umount SANDBOX",
        "umount WORK/root/run",
        "umount WORK/root/dev/pts",
        "umount WORK/root/dev",
        "umount WORK/root/sys",
        "umount WORK/root/proc",
        # The finished tree made into an ext4 again, with the same bytes for the same tree.
        "mount -o remount,ro WORK/root",
        "mkfs.ext4 -q -F -L root -U UUID -E hash_seed=UUID -d WORK/root WORK/root.ext4",
        "dumpe2fs WORK/root.ext4",
        "debugfs -w -f - WORK/root.ext4",
        "mount -o remount,rw WORK/root",
        "sync --file-system WORK/root",  # what was freed is committed, so fstrim sees it free
        "fstrim WORK/root",
        "umount WORK/root",
        f"losetup --detach {FAKE_DEVICE}",
        "fallocate --punch-hole --keep-size --offset 1048576 --length 133169152 WORK/disk.raw",
        "dd if=WORK/root.ext4 of=WORK/disk.raw bs=4M seek=1048576 oflag=seek_bytes conv=notrunc,sparse status=none",
        f"qemu-img convert -m {os.cpu_count()} --image-opts driver=raw,offset=1048576,size=133169152,"
        "file.driver=file,file.filename=WORK/disk.raw -O qcow2 STAGING/root.qcow2",
    ]
    probes = [index for index, argv in enumerate(recorder.started) if is_qemu(argv)]
    others = [argv for index, argv in enumerate(recorder.started) if index not in probes]
    assert others[0][:2] == ["tar", "--extract"]
    # The Python module, in a fresh interpreter of its own. Nothing is written back meanwhile: only
    # the whole disk's finish waits for the image file (hotsauce.image.disk.written_back_meanwhile).
    assert others[1][:3] == [sys.executable, "-m", CHILD_MODULE]
    assert len(others) == 2
    # Where /dev/kvm is usable, the KVM probe for libvirt.xml starts as soon as the base holds the
    # kernel, so it runs beside the modules.
    assert probes in ([], [1])
    assert result.manifest.os_distro == "tiny"  # read from the base the recorder let tar unpack
    assert (scene.output / "root.qcow2").is_file() and not work.exists() and not staging.exists()


def test_without_reproducible_the_ext4_is_not_made_again_and_qemu_img_writes_out_of_order(scene: Scene) -> None:
    recorder = CommandRecorder()
    recorded_build(scene, ["stamp"], recorder, [])
    transcript = recorder.transcript()
    # The journal's header is read once the root is unmounted (hotsauce.image.ext4_journal); the
    # recorded dumpe2fs names no journal, so nothing is punched.
    journal_reads = [line for line in transcript if line.startswith("dumpe2fs -h ")]
    assert len(journal_reads) == 1 and journal_reads[0].endswith("?offset=1048576")
    remake = [line for line in transcript if line not in journal_reads and (
              line.split()[0] in ("debugfs", "dumpe2fs", "dd", "fallocate") or " -d " in line or "remount" in line)]
    assert remake == []
    assert [line.endswith(FAKE_DEVICE) for line in transcript if line.startswith("mkfs.")] == [True]
    assert [" -W " in line for line in transcript if line.startswith("qemu-img convert")] == [True]


def test_a_debian_build_bootstraps_into_the_mounted_root_and_packs_the_set(scene: Scene) -> None:
    if not list(Path("/etc/apt/sources.list.d").glob("*.sources")):
        pytest.skip("this host has no deb822 apt sources to bootstrap from")
    config = scene.project / "build.yaml"
    config.write_text("base:\n  debian:\n    suite: bookworm\nmodules:\n  - stamp\n")
    recorder, archive = CommandRecorder(), scene.output.with_name("set.tar.gz")
    with proc.commands_answered_by(recorder):
        build(load_config(config), scene.options(output=archive, compress=True))
    [bootstrap] = [line for line in recorder.transcript(WORK=work_folder(recorder)) if line.startswith("mmdebstrap")]
    assert " --mode=root " in bootstrap and " bookworm WORK/root deb " in bootstrap
    assert [Path(argv[0]).name for argv in recorder.started][-2:] in (["pigz", "tar"], ["gzip", "tar"])
    assert recorder.started[-1][:2] == ["tar", "--create"]
    with tarfile.open(archive) as packed:
        assert {"root.qcow2", "vmlinuz", "initrd.img", "manifest.json"} <= set(packed.getnames())


def test_a_build_brackets_every_stage_in_order_and_ends_with_finished(scene: Scene) -> None:
    events: list[Event] = []
    result = recorded_build(scene, ["stamp"], CommandRecorder(), events)
    ran = [Stage.CONFIG, Stage.DOWNLOAD, Stage.DISK, Stage.FORMAT, Stage.MOUNT, Stage.BASE, Stage.MODULES,
           Stage.SBOM, Stage.FINISH, Stage.CONVERT, Stage.PUBLISH]
    assert stage_events(events, EventKind.STAGE_START) == ran
    assert stage_events(events, EventKind.STAGE_END) == ran
    assert list(result.times.seconds) == ran
    assert events[-1].kind is EventKind.FINISHED and events[-1].message == str(scene.output)


# Where a command fails -> the stage the build must name.
FAILURES = {
    "sfdisk --quiet": Stage.DISK,
    "losetup --find": Stage.DISK,
    "mkfs.ext4": Stage.FORMAT,
    f"mount -o nobarrier {FAKE_DEVICE}": Stage.MOUNT,
    "mount -t sysfs": Stage.MODULES,
    "sync --file-system": Stage.FINISH,
    "qemu-img": Stage.CONVERT,
}


@pytest.mark.parametrize("failing", list(FAILURES))
def test_a_failing_command_names_its_stage_and_everything_is_released_in_reverse(
    scene: Scene, failing: str
) -> None:
    recorder, events = CommandRecorder(failing=failing), list[Event]()
    with pytest.raises(BuildFailed) as raised:
        recorded_build(scene, ["stamp"], recorder, events)
    failure = raised.value
    assert failure.stage is FAILURES[failing]
    assert failure.__cause__ is failure.cause and failure.exit_status == 1
    program = failing.split()[0]
    assert str(failure).startswith(f"{failure.stage}: ")
    assert f"{program} exited with status 1: {program}: injected failure" in str(failure)
    assert stage_events(events, EventKind.STAGE_FAILED) == [failure.stage]
    assert holdings_left(recorder) == []
    assert list(scene.work_dir.iterdir()) == [] and list(scene.output.parent.iterdir()) == []


def test_a_python_module_that_raises_fails_the_modules_stage_naming_the_module(scene: Scene) -> None:
    recorder, events = CommandRecorder(), list[Event]()
    with pytest.raises(BuildFailed) as raised:
        recorded_build(scene, ["stamp", "boom"], recorder, events)
    assert raised.value.stage is Stage.MODULES
    assert isinstance(raised.value.cause, ModuleFailed) and raised.value.exit_status == 1
    assert str(raised.value) == (
        "modules: module 'boom' failed: RuntimeError: injected failure in a module "
        "(at boom.py:2: raise RuntimeError(\"injected failure in a module\"))"
    )
    assert holdings_left(recorder) == []


def test_a_full_image_is_named_as_the_cause_with_the_size_given(scene: Scene) -> None:
    with pytest.raises(BuildFailed) as raised:
        recorded_build(scene, ["disk_full"], CommandRecorder(), [])
    assert raised.value.stage is Stage.MODULES
    assert raised.value.hint == "the image is full: -s 128.0M is too small for the base and modules"
    assert str(raised.value).endswith(f"({raised.value.hint})")


def test_a_cancel_stops_the_build_releases_everything_and_writes_no_output(scene: Scene) -> None:
    recorder, events = CommandRecorder(), list[Event]()
    with pytest.raises(BuildCancelled) as raised:
        recorded_build(scene, ["cancel_now", "stamp"], recorder, events)
    assert raised.value.stage is Stage.MODULES and raised.value.exit_status == 130
    assert str(raised.value) == "modules: cancelled; everything held was released"
    assert not any("stamp" in e.message for e in events if e.kind is EventKind.INFO)  # the next module never ran
    assert holdings_left(recorder) == []
    assert list(scene.work_dir.iterdir()) == [] and list(scene.output.parent.iterdir()) == []


def test_the_stand_in_answers_only_inside_its_block_and_only_in_its_thread() -> None:
    recorder = CommandRecorder()
    seen_elsewhere: list[str] = []
    with proc.commands_answered_by(recorder):
        assert proc.output_of(["losetup", "--find", "--show", "x"]) == FAKE_DEVICE
        other = threading.Thread(target=lambda: seen_elsewhere.append(proc.output_of(["echo", "real"])))
        other.start()
        other.join()
    assert seen_elsewhere == ["real"]
    assert proc.output_of(["echo", "real"]) == "real"
    assert recorder.commands == [["losetup", "--find", "--show", "x"]]


def test_no_code_under_hotsauce_answers_commands_with_a_stand_in() -> None:
    users = [path.relative_to(REPO) for path in (REPO / "hotsauce").rglob("*.py")
             if "commands_answered_by" in path.read_text() and path.name != "proc.py"]
    assert users == []


def test_an_event_kind_is_checked_when_the_event_is_made() -> None:
    assert Event("stage-start", Stage.DISK).kind is EventKind.STAGE_START
    with pytest.raises(ValueError, match="'stage-begin' is not a valid EventKind"):
        Event("stage-begin", Stage.DISK)
