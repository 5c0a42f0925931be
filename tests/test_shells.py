"""Shells inside the image: `build --shell-on-failure`, `--shell-before`, and `hotsauce shell` on a set.

The build's shells are driven through a pseudo-terminal, as a person would
use them: hotsauce runs with the terminal as its controlling terminal and
stdin, and the test types into the shell and reads what it prints.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hotsauce.host import ledger
from hotsauce.output.imageset import Manifest, sha256_of
from tests.image_sets import extract_root, make_image_set
from tests.images import REPO, run_hotsauce
from tests.leaks import held_resources

EXPECT_SECONDS = 600  # a build on a busy two-core machine reaches its modules in a minute or several

LEAVES_AND_FAILS = '''
from hotsauce.rootpath import inside

def modify(name, root, cfg):
    inside(root, "/etc/left-by-module").write_text("the module was here\\n")
    raise RuntimeError("hot sauce everywhere")
'''

STAMPS = '''
from hotsauce.rootpath import inside

def modify(name, root, cfg):
    inside(root, f"/etc/stamped-by-{name}").write_text(name + "\\n")
'''


class Terminal:
    """A command on a pseudo-terminal of its own: its controlling terminal, stdin, stdout and stderr."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "dumb"}
        pid, fd = pty.fork()
        if pid == 0:  # the child: nothing but exec, it is a fork of a threaded process
            try:
                os.chdir(cwd)
                os.execve(sys.executable, [sys.executable, *argv], env)
            finally:
                os._exit(127)
        self.pid, self.fd, self.output, self.read_to = pid, fd, b"", 0

    def expect(self, text: str, seconds: float = EXPECT_SECONDS) -> str:
        """Everything printed up to and including `text`, which must come within `seconds`."""
        wanted, deadline = text.encode(), time.monotonic() + seconds
        while (at := self.output.find(wanted, self.read_to)) < 0:
            left = deadline - time.monotonic()
            assert left > 0 and self._read(left), f"no {text!r} in:\n{self.output.decode(errors='replace')[-3000:]}"
        seen, self.read_to = self.output[self.read_to:at + len(wanted)], at + len(wanted)
        return seen.decode(errors="replace")

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, seconds: float = EXPECT_SECONDS) -> int:
        """The exit status, once the command ended (its output read to the end)."""
        deadline = time.monotonic() + seconds
        while self._read(max(0.0, deadline - time.monotonic())):
            pass
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)

    def _read(self, seconds: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], seconds)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: every process holding the terminal ended
            return False
        self.output += chunk
        return bool(chunk)

    def kill(self) -> None:
        with_suppressed = (ProcessLookupError, ChildProcessError)
        try:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except with_suppressed:
            pass


def write_project(folder: Path, tarball: Path, modules: list[str]) -> Path:
    (folder / "python_modules").mkdir(parents=True)
    (folder / "python_modules" / "leaves_and_fails.py").write_text(LEAVES_AND_FAILS)
    for name in ("first", "second"):
        (folder / "python_modules" / f"{name}.py").write_text(STAMPS)
    listed = "".join(f"  - {name}\n" for name in modules)
    (folder / "build.yaml").write_text(f"download:\n  from: {tarball}\nkernel: false\nmodules:\n{listed}")
    return folder


def ledger_left(pid: int) -> bool:
    """Whether the hotsauce of that pid left its ledger: something it held was not released."""
    return (ledger.run_dir() / f"{pid}.json").exists()


def work_folders(tmp_root: Path) -> list[Path]:
    return sorted(tmp_root.glob("hotsauce-*"))


@pytest.fixture
def temp_folder() -> Path:
    """Where hotsauce run by the test makes its temporary files (conftest points TMPDIR there)."""
    return Path(os.environ["TMPDIR"])


@pytest.mark.integration
def test_shell_on_failure_opens_in_the_image_with_the_modules_changes_and_exit_releases_everything(
        debian_rootfs_tarball: Path, tmp_path: Path, temp_folder: Path) -> None:
    project = write_project(tmp_path / "project", debian_rootfs_tarball, ["first", "leaves_and_fails"])
    terminal = Terminal(["-m", "hotsauce", "build", "-s", "2G", "-o", "out", "--shell-on-failure"], project)
    try:
        banner = terminal.expect("(hotsauce leaves_and_fails failed)")
        assert "module leaves_and_fails failed" in banner and "hot sauce everywhere" in banner
        assert "build.log" in banner and "exiting it releases everything and fails the build" in banner
        terminal.send("cat /etc/os-release /etc/left-by-module /etc/stamped-by-first; echo END-$((40+2))\n")
        shown = terminal.expect("END-42")
        assert 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"' in shown
        assert "the module was here" in shown and "first" in shown
        # Ctrl-C stops what runs in the shell, not the build.
        terminal.send("sleep 300; echo SLEPT\n")
        time.sleep(2)
        terminal.send("\x03")
        terminal.send("echo STILL-$((1+1))\n")
        after = terminal.expect("STILL-2", seconds=60).splitlines()
        assert "SLEPT" not in [line.strip() for line in after]  # the sleep was stopped, its echo never ran
        terminal.send("exit\n")
        status = terminal.wait()
    finally:
        terminal.kill()
    output = terminal.output.decode(errors="replace")
    assert status == 1, output[-3000:]
    assert "modules" in output.splitlines()[-1] and "hot sauce everywhere" in output.splitlines()[-1]
    assert not (project / "out").exists()
    assert not held_resources(str(tmp_path)) and not held_resources(str(temp_folder))
    assert work_folders(temp_folder) == [] and not ledger_left(terminal.pid)


@pytest.mark.integration
def test_sigterm_to_hotsauce_while_the_shell_is_open_stops_it_and_releases_everything(
        debian_rootfs_tarball: Path, tmp_path: Path, temp_folder: Path) -> None:
    project = write_project(tmp_path / "project", debian_rootfs_tarball, ["leaves_and_fails"])
    terminal = Terminal(["-m", "hotsauce", "build", "-s", "2G", "-o", "out", "--shell-on-failure"], project)
    try:
        terminal.expect("(hotsauce leaves_and_fails failed)")
        terminal.send("echo READY-$((2*3))\n")
        terminal.expect("READY-6")
        os.kill(terminal.pid, signal.SIGTERM)
        status = terminal.wait(seconds=120)
    finally:
        terminal.kill()
    assert status == 130, terminal.output.decode(errors="replace")[-3000:]
    assert not (project / "out").exists()
    assert not held_resources(str(tmp_path)) and not held_resources(str(temp_folder))
    assert work_folders(temp_folder) == [] and not ledger_left(terminal.pid)


@pytest.mark.integration
def test_shell_before_opens_before_the_module_and_exiting_goes_on_with_the_build(
        debian_rootfs_tarball: Path, tmp_path: Path, temp_folder: Path) -> None:
    project = write_project(tmp_path / "project", debian_rootfs_tarball, ["first", "second"])
    terminal = Terminal(["-m", "hotsauce", "build", "-s", "2G", "-o", "out", "--shell-before", "second"], project)
    try:
        banner = terminal.expect("(hotsauce before second)")
        assert "before module second runs" in banner and "build.log" in banner
        terminal.send("cat /etc/os-release; ls /etc/stamped-by-*; echo from-the-shell > /etc/typed; "
                      "echo END-$((3+4))\n")
        shown = terminal.expect("END-7")
        assert 'ID=debian' in shown and "/etc/stamped-by-first" in shown and "stamped-by-second" not in shown
        terminal.send("exit\n")
        status = terminal.wait()
    finally:
        terminal.kill()
    assert status == 0, terminal.output.decode(errors="replace")[-3000:]
    assert not held_resources(str(tmp_path)) and work_folders(temp_folder) == []
    # The set has what the shell typed and what the module after it did.
    seen = run_hotsauce("shell", project / "out", "--", "cat", "/etc/typed", "/etc/stamped-by-second", cwd=tmp_path)
    assert seen.returncode == 0 and seen.stdout.split() == ["from-the-shell", "second"], seen.stderr


@pytest.mark.integration
def test_shell_before_an_unknown_module_is_refused_naming_it_before_allocating(
        debian_rootfs_tarball: Path, tmp_path: Path, temp_folder: Path) -> None:
    project = write_project(tmp_path / "project", debian_rootfs_tarball, ["first"])
    terminal = Terminal(["-m", "hotsauce", "build", "-s", "2G", "-o", "out", "--shell-before", "no-such"], project)
    try:
        status = terminal.wait(seconds=120)
    finally:
        terminal.kill()
    output = terminal.output.decode(errors="replace")
    assert status == 2, output
    assert "--shell-before no-such: no such module in the build (its modules: first)" in output
    assert not (project / "out").exists() and work_folders(temp_folder) == []


@pytest.mark.parametrize("flags", [["--shell-on-failure"], ["--shell-before", "first"]])
def test_shell_flags_without_a_terminal_are_refused_at_once(flags: list[str], tmp_path: Path,
                                                            temp_folder: Path) -> None:
    (tmp_path / "build.yaml").write_text("download:\n  from: /nowhere.tar.zst\nkernel: false\nmodules: [first]\n")
    result = subprocess.run([sys.executable, "-m", "hotsauce", "build", "-s", "2G", "-o", "out", *flags],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"hotsauce: {flags[0]}: needs a terminal on stdin to open a shell in "
                                          "the image (none here)"]
    assert work_folders(temp_folder) == [] and not (tmp_path / "out").exists()


# --- hotsauce shell on a built set -----------------------------------------------------------------


@pytest.fixture(scope="module")
def built_set(debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = write_project(tmp_path_factory.mktemp("set-project"), debian_rootfs_tarball, ["first"])
    built = run_hotsauce("build", "-s", "2G", "-o", "set", cwd=project)
    assert built.returncode == 0, built.stderr[-3000:]
    return project / "set"


def checksums_verify(folder: Path) -> subprocess.CompletedProcess[str]:
    names = sorted(path.name for path in folder.glob("*.sha256"))
    return subprocess.run(["sha256sum", "-c", *names], cwd=folder, capture_output=True, text=True, check=False)


@pytest.mark.integration
def test_shell_runs_a_command_in_the_sets_root_and_leaves_the_set_unchanged(built_set: Path, tmp_path: Path) -> None:
    image = built_set / Manifest.read(built_set).root
    before = sha256_of(image)
    listed = run_hotsauce("shell", built_set, "--", "dpkg", "-l", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[:2] == ["ii", "base-files"] for line in listed.stdout.splitlines())
    changed = run_hotsauce("shell", built_set, "--", "sh", "-c",
                           "touch /etc/discarded && rm -rf /usr/share/doc && exit 7", cwd=tmp_path)
    assert changed.returncode == 7, changed.stderr
    assert sha256_of(image) == before
    verified = checksums_verify(built_set)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    again = run_hotsauce("shell", built_set, "--", "sh", "-c", "test ! -e /etc/discarded && test -d /usr/share/doc",
                         cwd=tmp_path)
    assert again.returncode == 0, again.stderr


@pytest.mark.integration
def test_shell_write_saves_the_change_as_a_new_checksummed_set(built_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "changed.tar.gz"
    written = run_hotsauce("shell", "--write", out, built_set, "--", "sh", "-c", "echo kept > /etc/written-by-shell",
                           cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    unpacked = tmp_path / "changed"
    unpacked.mkdir()
    subprocess.run(["tar", "-xzf", out, "-C", unpacked], check=True)
    verified = checksums_verify(unpacked)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    old, new = Manifest.read(built_set), Manifest.read(unpacked)
    assert (new.layout, new.image_format, new.root) == (old.layout, old.image_format, old.root)
    assert new.build_id != old.build_id
    seen = run_hotsauce("shell", out, "--", "cat", "/etc/written-by-shell", cwd=tmp_path)
    assert seen.stdout == "kept\n", seen.stderr
    assert run_hotsauce("shell", built_set, "--", "test", "-e", "/etc/written-by-shell", cwd=tmp_path).returncode == 1


@pytest.mark.integration
def test_shell_write_of_a_failing_command_writes_nothing(built_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    result = run_hotsauce("shell", "--write", out, built_set, "--", "false", cwd=tmp_path)
    assert result.returncode == 1 and not out.exists()


@pytest.mark.integration
@pytest.mark.boot
def test_shell_write_produces_a_set_that_boots_with_the_change(debian_rootfs_tarball: Path, tmp_path: Path) -> None:
    from tests.disk_boots import boot

    handmade = make_image_set(extract_root(debian_rootfs_tarball, tmp_path / "tree"), tmp_path / "set")
    out = tmp_path / "changed"
    written = run_hotsauce("shell", "--write", out, handmade, "--", "sh", "-c",
                           "echo booted-with-it > /etc/hotsauce-shell-mark", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    verdict = boot(out, tmp_path / "logs", "--check", "grep -q booted-with-it /etc/hotsauce-shell-mark")
    assert verdict["ok"], verdict
