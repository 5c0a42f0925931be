"""The image root prepared for modules: kernel filesystems, no services, name resolution.

While modules run, the root needs /proc, /sys and /dev like a booted system,
must never start a service on the build host, and must resolve names with the
host's resolver. Afterwards every trace of that preparation is gone and the
image's own /etc/resolv.conf is back exactly as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from hotsauce.bases.bootstrap_hooks import DPKG_UNSAFE_IO
from hotsauce.errors import StageFailed
from hotsauce.host.mounting import mounted
from hotsauce.host.release import remove, stop_processes_holding
from hotsauce.modules.sandbox import sandbox_state, stop_sandboxes
from hotsauce.modules.services import policy_rc_d, systemctl_wrapper

# Exit status 101 tells invoke-rc.d (and deb-systemd-invoke) "action forbidden".
POLICY_RC_D = policy_rc_d()

# A stand-in for start-stop-daemon: init scripts run by hand or by maintainer
# scripts that bypass invoke-rc.d still start nothing.
START_STOP_DAEMON_STUB = (
    "#!/bin/sh\n"
    "# hotsauce: no daemon starts while the image is being built\n"
    'echo "start-stop-daemon: not starting a daemon in an image build" >&2\n'
    "exit 0\n"
)

# Where each kernel filesystem goes, and how it is mounted there.
KERNEL_MOUNTS: tuple[tuple[str, list[str]], ...] = (
    ("proc", ["-t", "proc", "proc"]),
    ("sys", ["-t", "sysfs", "sysfs"]),
    # Private, so that nothing mounted below them propagates back to the host's /dev.
    ("dev", ["--bind", "--make-private", "/dev"]),
    ("dev/pts", ["--bind", "--make-private", "/dev/pts"]),
    # What services "started" in the build put in /run (hotsauce.modules.services) is gone afterwards.
    ("run", ["-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs"]),
)

SAVED_SUFFIX = ".hotsauce-saved"
START_STOP_DAEMON = ("usr/sbin/start-stop-daemon", "sbin/start-stop-daemon")
SYSTEMCTL = ("usr/bin/systemctl", "bin/systemctl")


def checked_host_path(root: Path, relative: str) -> Path:
    """ROOT/relative as the host resolves it, refused if its parents leave the root
    through a symlink.

    The image's own symlinks must never make us mount over or write into the
    host's files. Unlike hotsauce.rootpath.inside, which resolves the image's
    links within the image, this keeps the path as the host sees it and only
    refuses one that leaves the root: kernel filesystems and hotsauce's
    stand-ins go where the image has real folders.
    """
    path = root / relative
    parent = path.parent.resolve()
    if parent != root.resolve() and not parent.is_relative_to(root.resolve()):
        raise StageFailed("chroot", f"{path} leads outside the image root (through a symlink)")
    return path


@contextmanager
def kernel_filesystem_mounted(root: Path, relative: str, mount_args: list[str]) -> Iterator[None]:
    """/proc, /sys or a bind of the host's /dev at ROOT/relative while the block runs."""
    target = checked_host_path(root, relative)
    if target.is_symlink():
        raise StageFailed("chroot", f"{target} is a symlink; refusing to mount over it")
    created = not target.exists()
    if created:
        target.mkdir(mode=0o755)
    try:
        with mounted(mount_args, target):
            yield
    finally:
        if created:
            target.rmdir()


@contextmanager
def replaced_file(root: Path, relative: str, content: str, mode: int) -> Iterator[None]:
    """A file of ours at ROOT/relative while the block runs; the image's own back afterwards.

    The image's file (or symlink) is renamed aside, so it comes back with its
    inode, owner, mode and target untouched. When a module replaced our file
    on purpose (a package shipping its own), that version is kept.
    """
    path = checked_host_path(root, relative)
    if not path.parent.is_dir():
        # A root without the folder (a minimal one) has nothing that would read the file.
        yield
        return
    saved = path.with_name(path.name + SAVED_SUFFIX)
    had_own = path.is_symlink() or path.exists()
    if had_own:
        os.rename(path, saved)
    try:
        path.write_text(content)
        path.chmod(mode)
        ours = path.stat()
        yield
    except BaseException:
        _put_back(path, saved, had_own, None)
        raise
    _put_back(path, saved, had_own, (ours.st_ino, content))


def _put_back(path: Path, saved: Path, had_own: bool, ours: tuple[int, str] | None) -> None:
    if ours is not None and not _is_ours(path, *ours):
        # A module replaced the file on purpose: keep its version.
        if had_own:
            remove(saved)
        return
    remove(path)
    if had_own:
        os.rename(saved, path)


def _is_ours(path: Path, inode: int, content: str) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    return path.stat().st_ino == inode and path.read_text(errors="replace") == content


@contextmanager
def replaced_program(
    root: Path, candidates: tuple[str, ...], script: Callable[[str], str]
) -> Iterator[None]:
    """`script(the image's own program, as saved)` in place of the first candidate there is."""
    for relative in candidates:
        path = checked_host_path(root, relative)
        if path.is_file() and not path.is_symlink():
            saved_in_image = "/" + relative + SAVED_SUFFIX
            mode = path.stat().st_mode & 0o7777
            with replaced_file(root, relative, script(saved_in_image), mode):
                yield
            return
    yield


def start_stop_daemon_stub(_saved: str) -> str:
    return START_STOP_DAEMON_STUB


def offline_systemctl(saved: str) -> str:
    """systemctl that enables units but never starts one; a unit it is asked to start gets
    the folders and tmpfiles a real start would create (hotsauce.modules.services)."""
    return systemctl_wrapper(saved)


def stop_processes_in(root: Path) -> None:
    """SIGTERM, then SIGKILL, every process still running inside the root.

    Ansible's workers run in sessions of their own, so when a run is cancelled
    the commands they started in the image outlive ansible-playbook; a daemon
    started by hand would too. Nothing of the build may keep running. Sandboxed
    commands go first: they are found by their bwrap, not by their paths.
    """
    stop_sandboxes(root)
    stop_processes_holding(root.resolve())


@contextmanager
def processes_stopped_on_release(root: Path) -> Iterator[None]:
    try:
        yield
    finally:
        stop_processes_in(root)


def host_resolver_config() -> str:
    """The host's resolv.conf as text (it may be a symlink into /run)."""
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return ""


@contextmanager
def build_chroot(root: Path, *, sandboxed: bool = True) -> Iterator[None]:
    """While modules (Python and Ansible) run: /proc, /sys, /dev, /dev/pts mounted inside root;
    services cannot start (a policy-rc.d that exits 101, removed afterwards, plus a
    start-stop-daemon that starts nothing and a systemctl that runs offline: it enables
    units and answers start/restart with a no-op success);
    the host's resolver usable for name resolution inside the chroot, while the image's
    own /etc/resolv.conf, /etc/hostname, /etc/hosts are exactly as before once released
    (hostname and hosts are never touched); with `sandboxed`, the sandbox state
    (hotsauce.modules.sandbox) that commands run in the image share (the bootloader's tools
    run in a plain chroot and go without it: making it costs about 0.2 s). Everything
    released in reverse order, also on exceptions, after stopping any process still running
    inside the root."""
    root = root.absolute()
    if not (root / "etc").is_dir():
        raise StageFailed("chroot", f"{root} does not look like a root filesystem (no etc/)")
    with ExitStack() as stack:
        for relative, mount_args in KERNEL_MOUNTS:
            stack.enter_context(kernel_filesystem_mounted(root, relative, mount_args))
        stack.enter_context(replaced_file(root, "usr/sbin/policy-rc.d", POLICY_RC_D, 0o755))
        stack.enter_context(replaced_program(root, START_STOP_DAEMON, start_stop_daemon_stub))
        stack.enter_context(replaced_program(root, SYSTEMCTL, offline_systemctl))
        stack.enter_context(replaced_file(root, "etc/resolv.conf", host_resolver_config(), 0o644))
        # Package installs by modules skip dpkg's syncs too (see hotsauce.bases.bootstrap_hooks).
        stack.enter_context(replaced_file(root, DPKG_UNSAFE_IO, "force-unsafe-io\n", 0o644))
        # What runs in the image runs sandboxed (hotsauce.modules.sandbox): its private
        # /proc/sys, network namespace and stubs live as long as the chroot.
        if sandboxed:
            stack.enter_context(sandbox_state(root))
        stack.enter_context(processes_stopped_on_release(root))
        yield
