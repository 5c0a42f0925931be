"""A private libvirtd for the tests: the system QEMU driver, with none of the host's libvirt state.

libvirtd runs in a mount namespace of its own in which /etc/libvirt, /run,
/var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt are folders of the
test. It sees none of the host's domains, networks or pools, and whatever
the test defines there goes with the folder; the host's own libvirtd, if
any, is not touched. Its socket is reached from outside through the folder.

QEMU runs as root without libvirt's relabelling, so the sets the tests
build can stay in pytest's private (0700) folders.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from hotsauce.host.proc import child_process

START_SECONDS = 120

QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
"""

LIBVIRTD_CONF = """\
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
log_outputs = "3:stderr"
"""

# Folder of the test -> the path libvirtd sees it as.
PRIVATE_PATHS = {
    "etc": "/etc/libvirt",
    "run": "/run",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}


class VirshFailed(AssertionError):
    pass


@dataclass(frozen=True)
class Libvirt:
    folder: Path  # the instance's folders (see PRIVATE_PATHS) and its log
    uri: str

    def virsh(self, *args: str | Path, check: bool = True, timeout: float = 60) -> str:
        result = subprocess.run(["virsh", "--quiet", "-c", self.uri, *map(str, args)], capture_output=True,
                                text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise VirshFailed(f"virsh {' '.join(map(str, args))}: {result.stderr.strip()}")
        return result.stdout

    def domains(self) -> list[str]:
        return self.virsh("list", "--all", "--name").split()

    def networks(self) -> list[str]:
        return self.virsh("net-list", "--all", "--name").split()

    def volumes(self) -> list[str]:
        pools = self.virsh("pool-list", "--all", "--name").split()
        return [f"{pool}/{v}" for pool in pools for v in self.virsh("vol-list", pool, "--name").split()]

    def remove_domain(self, name: str) -> None:
        """Stopped and undefined, whatever state it is in."""
        if name not in self.domains():
            return
        self.virsh("destroy", name, check=False)  # fails when it is not running: fine
        self.virsh("undefine", name, "--nvram")  # --nvram: a UEFI domain's variables go too

    def daemon_log(self) -> str:
        return (self.folder / "libvirtd.log").read_text(errors="replace")


@contextmanager
def private_libvirtd(folder: Path) -> Iterator[Libvirt]:
    """libvirtd in its own mount namespace; on the way out every domain is destroyed and
    undefined, libvirtd is stopped, and any QEMU it left is killed."""
    for name in PRIVATE_PATHS:
        (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / "etc" / "qemu.conf").write_text(QEMU_CONF)
    (folder / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF)
    mounts = "".join(f"mount --bind '{folder / name}' '{target}'\n" for name, target in PRIVATE_PATHS.items())
    script = f"set -e\n{mounts}exec libvirtd\n"
    libvirt = Libvirt(folder, f"qemu+unix:///system?socket={folder}/run/libvirt/libvirt-sock")
    with (folder / "libvirtd.log").open("wb") as log, child_process(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script], stdout=log, stderr=log
    ) as daemon:
        try:
            _wait_until_it_answers(libvirt, daemon)
            yield libvirt
        finally:
            _remove_everything(libvirt, daemon)
    _kill_leftover_qemu(folder)


def _wait_until_it_answers(libvirt: Libvirt, daemon: subprocess.Popen[bytes]) -> None:
    """Until `virsh version` names the hypervisor: libvirtd has probed QEMU's capabilities
    (a few seconds, more on a busy machine), which every later command needs."""
    deadline = time.monotonic() + START_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        if daemon.poll() is not None:
            raise AssertionError(f"libvirtd exited with status {daemon.returncode}: {libvirt.daemon_log()[-2000:]}")
        with suppress(VirshFailed, subprocess.TimeoutExpired):
            libvirt.virsh("version", timeout=left)
            return
        time.sleep(0.3)
    raise AssertionError(f"libvirtd did not answer within {START_SECONDS} s: {libvirt.daemon_log()[-2000:]}")


def _remove_everything(libvirt: Libvirt, daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        with suppress(VirshFailed, subprocess.TimeoutExpired):
            for name in libvirt.domains():
                libvirt.remove_domain(name)


def _kill_leftover_qemu(folder: Path) -> None:
    """A QEMU libvirtd started runs in a session of its own: gone only once killed."""
    for pid_file in (folder / "run" / "libvirt" / "qemu").glob("*.pid"):
        with suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            if b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes():  # not a reused pid
                os.kill(pid, signal.SIGKILL)
