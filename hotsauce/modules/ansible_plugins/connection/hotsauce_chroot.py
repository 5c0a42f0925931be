"""Ansible connection into an image root with chroot(8).

Ours rather than community.general's chroot plugin: that collection is not
reachable from the build hosts, and the `ansible` package that carries it
weighs about 547 MB for this one file. Everything runs inside the root, and
files travel through `chroot ROOT /bin/sh -c 'cat ...'`, so paths resolve
through the image's own symlinks, never the host's.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import typing as t

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
    name: hotsauce_chroot
    short_description: run tasks inside an image root with chroot
    description:
        - Runs every command inside the image root; files are copied in and out through the chroot.
    author: hotsauce
    options:
        remote_addr:
            description: the image root folder on the build host
            default: inventory_hostname
            type: str
            vars:
                - name: inventory_hostname
                - name: ansible_host
    extends_documentation_fragment:
        - connection_pipelining
"""


# The environment a command in the image sees: the image's paths, nothing of the
# host's or of ansible-runner's. SYSTEMD_OFFLINE makes systemctl enable units
# but never start one.
IMAGE_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "SHELL": "/bin/sh",
    "DEBIAN_FRONTEND": "noninteractive",
    "SYSTEMD_OFFLINE": "1",
}


def image_environment() -> dict[str, str]:
    """Module payloads and the temp files of what modules run land in hotsauce's folder of the
    image's /tmp (removed after the run even when it is cut short): Ansible's remote temp
    folder, which hotsauce.modules.ansible_run names and hands over as ANSIBLE_REMOTE_TEMP."""
    return {**IMAGE_ENVIRONMENT, "TMPDIR": os.environ.get("ANSIBLE_REMOTE_TEMP", "/tmp")}


class Connection(ConnectionBase):  # type: ignore[misc]  # ansible ships no type stubs
    """Commands and files inside an image root."""

    transport = "hotsauce_chroot"
    has_pipelining = True
    default_user = "root"

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.root = ""

    def _connect(self) -> Connection:
        self.root = os.path.abspath(str(self.get_option("remote_addr")))
        if not os.path.isfile(os.path.join(self.root, "bin", "sh")):
            raise AnsibleConnectionFailure(f"{self.root} is not an image root (no /bin/sh in it)")
        self._connected = True
        return self

    def _chroot(self, command: list[str], **popen: t.Any) -> subprocess.Popen[bytes]:
        # No new session: when ansible-runner kills ansible-playbook's process
        # group, these children go with it.
        return subprocess.Popen(
            ["chroot", self.root, *command], env=image_environment(), cwd="/", **popen
        )

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = True
    ) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        process = self._chroot(
            ["/bin/sh", "-c", cmd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stdout, stderr = process.communicate(in_data)
        return process.returncode, stdout, stderr

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        with open(in_path, "rb") as source:
            process = self._chroot(
                ["/bin/sh", "-c", f"cat > {shlex.quote(out_path)}"],
                stdin=source,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _, stderr = process.communicate()
        if process.returncode != 0:
            raise AnsibleError(
                f"cannot write {out_path} in the image: {stderr.decode(errors='replace')}"
            )

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        with open(out_path, "wb") as target:
            process = self._chroot(
                ["/bin/sh", "-c", f"cat {shlex.quote(in_path)}"],
                stdin=subprocess.DEVNULL,
                stdout=target,
                stderr=subprocess.PIPE,
            )
            _, stderr = process.communicate()
        if process.returncode != 0:
            raise AnsibleError(
                f"cannot read {in_path} in the image: {stderr.decode(errors='replace')}"
            )

    def close(self) -> None:
        self._connected = False
