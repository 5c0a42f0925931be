"""Build hosts reached over real SSH: one sshd per builder on its own loopback address.

Each builder has its own host key, sshd_config, authorized key, work folder and cache;
they all run on this machine as root, so they share its disk and cores. The controller
reaches them with a key of the test's own and a known_hosts file that holds exactly
their host keys (Ansible's host key checking stays on).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SSHD = "/usr/sbin/sshd"
ADDRESSES = ("127.0.0.2", "127.0.0.3")
PRIVSEP_FOLDER = Path("/run/sshd")  # sshd refuses to start without it; the ssh service would make it


@dataclass
class SshBuilder:
    name: str
    address: str
    folder: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def work(self) -> Path:
        return self.folder / "work"

    @property
    def cache(self) -> Path:
        return self.folder / "cache"

    def start(self) -> None:
        self.port = free_port(self.address)
        config = self.folder / "sshd_config"
        config.write_text(
            f"ListenAddress {self.address}:{self.port}\n"
            f"HostKey {self.folder / 'host_key'}\n"
            f"PidFile {self.folder / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
        )
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + 10
        while not answers(self.address, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd for {self.name} did not start (status {self.process.poll()})")
            time.sleep(0.05)

    def kill(self) -> None:
        """The builder disappears: its sshd and every sshd session under it die at once."""
        if self.process is None:
            return
        for pid in [self.process.pid, *sshd_descendants(self.process.pid)]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None

    def running_builds(self) -> list[int]:
        """Processes of `hotsauce build` runs this builder started (found by its work folder)."""
        marker = f"{self.work}/venv/bin/hotsauce build".encode()
        return [pid for pid, argv in processes() if marker in argv]

    def wait_idle(self, timeout: float = 600) -> None:
        """Until no build of this builder runs: a builder lost over SSH goes on building alone."""
        deadline = time.monotonic() + timeout
        while self.running_builds():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: builds still running after {timeout}s")
            time.sleep(0.5)


@dataclass
class SshBuilders:
    builders: list[SshBuilder]
    key: Path
    known_hosts: Path

    def inventory(self, path: Path, parallel: int = 1, min_free_gb: int = 5) -> Path:
        """An inventory of these builders in the `builders` group, as a user would write it."""
        hosts = {b.name: {"ansible_host": b.address, "ansible_port": b.port, "hotsauce_work_dir": str(b.work),
                          "hotsauce_cache_dir": str(b.cache), "hotsauce_parallel_builds": parallel,
                          "hotsauce_min_free_gb": min_free_gb} for b in self.builders}
        common = {"ansible_user": "root", "ansible_ssh_private_key_file": str(self.key),
                  # In place of Ansible's default ssh_args: no ControlPersist master outlives a run (a
                  # killed sshd is gone at once), and no -C, which costs CPU on loopback for nothing.
                  "ansible_ssh_args": "-o ControlMaster=no",
                  "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts}",
                  "ansible_python_interpreter": "/usr/bin/python3"}
        path.write_text(yaml.safe_dump({"all": {"children": {"builders": {"hosts": hosts, "vars": common}}}}))
        return path

    def by_name(self, name: str) -> SshBuilder:
        return next(b for b in self.builders if b.name == name)


@contextmanager
def ssh_builders(folder: Path, count: int = 2) -> Iterator[SshBuilders]:
    PRIVSEP_FOLDER.mkdir(mode=0o755, exist_ok=True)
    key = folder / "controller_key"
    keygen(key)
    builders = []
    for index, address in enumerate(ADDRESSES[:count]):
        builder = SshBuilder(f"builder-{'abcdefgh'[index]}", address, folder / f"builder-{index}")
        builder.folder.mkdir(parents=True)
        keygen(builder.folder / "host_key")
        (builder.folder / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
        builders.append(builder)
    known_hosts = folder / "known_hosts"
    try:
        for builder in builders:
            builder.start()
        known_hosts.write_text("".join(
            f"[{b.address}]:{b.port} {(b.folder / 'host_key.pub').read_text()}" for b in builders))
        yield SshBuilders(builders, key, known_hosts)
    finally:
        for builder in builders:
            builder.stop()
        for builder in builders:
            builder.wait_idle()


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


def answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def processes() -> Iterator[tuple[int, bytes]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue


def sshd_descendants(root: int) -> list[int]:
    """The sshd processes under `root`: the session processes of its connections."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
        names[int(entry.name)] = name
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(), []):
            queue.append(child)
            if names.get(child) == "sshd":
                found.append(child)
    return found
