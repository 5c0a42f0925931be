"""How a command runs inside an image root while it is being built: in a bubblewrap sandbox.

Everything that runs in the image (Ansible tasks, commands a Python module
starts, package installs, the debugging shells) goes through
`command_in_image`, so that one place decides how the image is entered. The
argument list itself is built by the Ansible connection plugin's module
(hotsauce.modules.ansible_plugins.connection.hotsauce_chroot), which must also
work without hotsauce: see its docstring for what the sandbox isolates and
absorbs. Here is what hotsauce adds around it: the build's sandbox state
(`sandbox_state`, entered by hotsauce.modules.chroot.build_chroot) and
`run_in_image`, the helper Python modules use to run a program in the image.

Why bubblewrap rather than unshare(1) plus setpriv: one exec sets up every
namespace, the minimal /dev, the fresh /proc and /run, the binds and the
capability drop, and --die-with-parent ties the sandbox's life to its parent;
the same with unshare needs a shell script running mount(8) a dozen times
inside the new namespace, each a process start, for every task.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from hotsauce.errors import StageFailed
from hotsauce.host import ledger
from hotsauce.host.mounting import mounted
from hotsauce.host.proc import run
from hotsauce.host.release import stop_processes_found_by

PROC_SYS = Path("/proc/sys")


def _before_importing_the_plugin() -> None:
    """The connection plugin's class imports ansible-core, which makes its local temporary folder
    at once (and removes it at exit), under the build host's ~/.ansible unless told otherwise:
    should this process ever make the class, its folder goes in the host's temporary folder
    instead. Ansible runs set their own."""
    os.environ.setdefault("ANSIBLE_LOCAL_TEMP", tempfile.gettempdir())


def command_in_image(root: Path, argv: Sequence[str], *, hostname: str | None = None) -> list[str]:
    """The argument list that runs `argv` inside the image root, sandboxed.

    `hostname` is the sandbox's host name; by default the image's /etc/hostname."""
    # Imported here, as below, so that what imports this module does not import the plugin;
    # the plugin itself imports ansible-core only when its Connection class is asked for.
    _before_importing_the_plugin()
    from hotsauce.modules.ansible_plugins.connection.hotsauce_chroot import sandbox_argv

    return sandbox_argv(str(root), argv, hostname=hostname)


def run_in_image(
    root: str | Path,
    argv: Sequence[str],
    *,
    check: bool = True,
    capture_output: bool = False,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` inside the image root, in the same sandbox as Ansible tasks; for Python
    modules (`modify(name, root, cfg)`), which themselves run on the build host.

    The environment is the image's (PATH, HOME, LANG, DEBIAN_FRONTEND...) plus `env`.
    With `check`, a non-zero exit raises subprocess.CalledProcessError, as
    subprocess.run does."""
    _before_importing_the_plugin()
    from hotsauce.modules.ansible_plugins.connection.hotsauce_chroot import image_environment

    return subprocess.run(
        command_in_image(Path(root), argv),
        check=check,
        capture_output=capture_output,
        input=input,
        env={**image_environment(), **(env or {})},
        cwd="/",
    )


@contextmanager
def sandbox_state(root: Path) -> Iterator[None]:
    """The build's sandbox state while the block runs: a private writable copy of /proc/sys,
    a private network namespace for firewall and link commands, and the stub for programs
    that would act on the host. Removed afterwards, the namespace unmounted first."""
    _before_importing_the_plugin()
    from hotsauce.modules.ansible_plugins.connection.hotsauce_chroot import (
        STATE_NETNS,
        STATE_STUB,
        STATE_SYSCTL,
        STUB,
        bwrap_available,
        state_folder,
    )

    if not bwrap_available():
        raise StageFailed("sandbox", "bwrap is not installed; modules run in a bubblewrap sandbox "
                                     "(Debian: apt-get install bubblewrap)")
    folder = Path(state_folder(str(root)))
    if folder.exists():
        raise StageFailed("sandbox", f"{folder} exists: another build of {root} is running, "
                                     "or one was killed (`hotsauce cleanup` removes it)")
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with ExitStack() as stack:
        folder.mkdir(mode=0o700)
        stack.enter_context(ledger.held(ledger.Kind.PATH, folder))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        stack.enter_context(in_memory(folder))
        copy_proc_sys(folder / STATE_SYSCTL)
        stub = folder / STATE_STUB
        stub.write_text(STUB)
        stub.chmod(0o755)
        stack.enter_context(private_network_namespace(folder / STATE_NETNS))
        yield


@contextmanager
def in_memory(folder: Path) -> Iterator[None]:
    """A tmpfs of the build's own at `folder` while the block runs. /run is not a tmpfs on every
    host, and on a disk the copy of /proc/sys (some 1,300 files, made for every chroot) took
    1 to 2 s while other builds wrote; in memory it takes a twentieth of that."""
    with mounted(["-t", "tmpfs", "-o", "mode=0700,size=64m", "hotsauce-sandbox"], folder):
        yield


def copy_proc_sys(target: Path) -> None:
    """The host's /proc/sys as plain files: what a role's `sysctl -w` or `sysctl -p` writes
    lands here, and later tasks read it back. Files the host does not let us read (write-only
    triggers such as vm/drop_caches) are there, empty, so writing them succeeds too."""
    host_device = PROC_SYS.stat().st_dev
    for folder, subfolders, files in os.walk(PROC_SYS):
        here = Path(folder)
        # A filesystem mounted inside /proc/sys (binfmt_misc) is not a kernel parameter.
        subfolders[:] = [name for name in subfolders if (here / name).stat().st_dev == host_device]
        copy = target / here.relative_to(PROC_SYS)
        copy.mkdir(parents=True, exist_ok=True)
        for name in files:
            content = b""
            with suppress(OSError):
                content = (here / name).read_bytes()
            (copy / name).write_bytes(content)


@contextmanager
def private_network_namespace(path: Path) -> Iterator[None]:
    """A network namespace of the build's own, kept alive by a bind mount at `path`: the
    firewall and link programs run in the image act on it, never on the host's."""
    path.touch()
    with ledger.held(ledger.Kind.MOUNT, path):
        run(["unshare", f"--net={path}", "true"])
        try:
            yield
        finally:
            run(["umount", path])


def stop_sandboxes(root: Path) -> list[int]:
    """SIGKILL the bwrap processes of every sandbox of `root` still running; each takes its
    sandbox's processes with it (its PID namespace ends). Returns the pids.

    Not SIGTERM first: it would give nothing a chance to finish. The outer bwrap dies of it
    without passing it on, and the inner one, its namespace's init, ignores it; when the outer
    one died before the inner one asked to die with its parent, the inner one held the stop for
    the whole grace period."""
    return stop_processes_found_by(lambda: sandbox_processes(root), graceful=False)


# A process in the middle of execve shows no command line for a moment (its new memory is in
# place before its arguments are); a stop whose scan came up empty ends, so a scan that met such a
# process looks again. Kernel threads and processes exiting or exited have none for good.
SETTLE_SCANS = 40
SETTLE_PAUSE_SECONDS = 0.005
PF_EXITING = 0x4
PF_KTHREAD = 0x200000


def sandbox_processes(root: Path) -> list[int]:
    """The bwrap processes whose sandbox is `root` (they bind it as their /)."""
    bind = [b"--bind", os.path.realpath(root).encode(), b"/"]
    found: list[int] = []
    for _ in range(SETTLE_SCANS):
        found, unsure = _scan_for_sandboxes(bind)
        if not unsure:
            break
        time.sleep(SETTLE_PAUSE_SECONDS)
    return found


def _scan_for_sandboxes(bind: list[bytes]) -> tuple[list[int], bool]:
    """The pids whose command line holds `bind`, and whether some process was caught mid-exec."""
    found = []
    unsure = False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if argv == [b""]:
            unsure = unsure or _in_exec(entry.path)
        # setpriv execs bwrap: the process is bwrap by then.
        elif os.path.basename(argv[0]) in (b"bwrap", b"setpriv") and any(
                argv[i:i + 3] == bind for i in range(len(argv) - 2)):
            found.append(int(entry.name))
    return found, unsure


def _in_exec(proc_folder: str) -> bool:
    """Whether a process without a command line is a user process, alive: one in execve."""
    try:
        stat = Path(proc_folder, "stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    state, flags = fields[0], int(fields[6])
    return state not in ("Z", "X", "x") and not flags & (PF_KTHREAD | PF_EXITING)
