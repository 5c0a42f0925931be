"""The sandbox's argument list, read without running it: what it unshares, drops and covers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotsauce.modules.ansible_plugins.connection.hotsauce_chroot import (
    SANDBOX_REAL,
    STATE_STUB,
    resolve_in_root,
    state_folder,
)
from hotsauce.modules.sandbox import command_in_image


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A root with a Debian-like merged /usr, iptables behind alternatives, kmod and swapon."""
    root = tmp_path / "root"
    for folder in ("usr/sbin", "usr/bin", "etc/alternatives"):
        (root / folder).mkdir(parents=True)
    (root / "sbin").symlink_to("usr/sbin")
    (root / "bin").symlink_to("usr/bin")
    for program in ("usr/sbin/xtables-nft-multi", "usr/bin/kmod", "usr/sbin/swapon", "usr/bin/true"):
        (root / program).write_text("#!/bin/sh\n")
    (root / "etc/alternatives/iptables").symlink_to("/usr/sbin/iptables-nft")
    (root / "usr/sbin/iptables-nft").symlink_to("xtables-nft-multi")
    (root / "usr/sbin/iptables").symlink_to("/etc/alternatives/iptables")
    (root / "usr/sbin/modprobe").symlink_to("/bin/kmod")
    (root / "usr/bin/lsmod").symlink_to("kmod")
    (root / "etc/hostname").write_text("image-name\n")
    return root


@pytest.fixture
def build_state(fake_root: Path) -> Iterator[Path]:
    """The state folder a build holds (hotsauce.modules.sandbox.sandbox_state), made by hand."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox state lives in /run")
    folder = Path(state_folder(str(fake_root)))
    (folder / "sys").mkdir(parents=True)
    (folder / STATE_STUB).write_text("#!/bin/sh\n")
    yield folder
    shutil.rmtree(folder)


def options_of(argv: list[str], flag: str, count: int) -> list[tuple[str, ...]]:
    return [tuple(argv[i + 1:i + 1 + count]) for i, arg in enumerate(argv) if arg == flag]


def test_each_command_gets_its_own_namespaces_dev_proc_and_run(fake_root: Path) -> None:
    argv = command_in_image(fake_root, ["/bin/true"])
    assert argv[0] == "setpriv" and "-sys_module" in argv[2].split(",") and argv[3] == "bwrap"
    assert argv[-2:] == ["--", "/bin/true"]
    assert {"--unshare-pid", "--unshare-uts", "--unshare-ipc", "--die-with-parent"} <= set(argv)
    assert ("/dev",) in options_of(argv, "--dev", 1) and ("/proc",) in options_of(argv, "--proc", 1)
    assert ("/run",) in options_of(argv, "--tmpfs", 1)
    assert options_of(argv, "--hostname", 1) == [("image-name",)]
    assert options_of(command_in_image(fake_root, ["true"], hostname="given"), "--hostname", 1) == [("given",)]


def test_without_a_builds_state_mounts_swap_and_networking_are_out_of_reach(fake_root: Path) -> None:
    dropped = {option[0] for option in options_of(command_in_image(fake_root, ["true"]), "--cap-drop", 1)}
    assert {"CAP_SYS_MODULE", "CAP_SYS_TIME", "CAP_SYS_BOOT", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"} <= dropped
    assert "CAP_CHOWN" not in dropped and "CAP_SETUID" not in dropped


def test_with_a_builds_state_the_stub_covers_the_real_programs_behind_their_links(
    fake_root: Path, build_state: Path
) -> None:
    argv = command_in_image(fake_root, ["true"])
    dropped = {option[0] for option in options_of(argv, "--cap-drop", 1)}
    assert "CAP_SYS_MODULE" in dropped and "CAP_SYS_ADMIN" not in dropped
    stub = str(build_state / STATE_STUB)
    covered = {target for source, target in options_of(argv, "--ro-bind", 2) if source == stub}
    assert covered == {"/usr/sbin/xtables-nft-multi", "/usr/bin/kmod", "/usr/sbin/swapon"}
    links = dict((link, target) for target, link in options_of(argv, "--symlink", 2))
    assert links[f"{SANDBOX_REAL}/iptables"].endswith("/xtables-nft-multi")
    assert links[f"{SANDBOX_REAL}/lsmod"] == links[f"{SANDBOX_REAL}/modprobe"]
    assert (str(build_state / "sys"), "/proc/sys") in options_of(argv, "--bind", 2)


def test_links_resolve_inside_the_image_never_on_the_host(fake_root: Path) -> None:
    (fake_root / "etc/escape").symlink_to("/../../../../etc/hostname")
    assert resolve_in_root(str(fake_root), "/sbin/iptables") == "/usr/sbin/xtables-nft-multi"
    assert resolve_in_root(str(fake_root), "/etc/escape") == "/etc/hostname"
    assert resolve_in_root(str(fake_root), "/sbin/missing") is None
    (fake_root / "etc/loop").symlink_to("loop")
    assert resolve_in_root(str(fake_root), "/etc/loop") is None


def test_the_sandbox_is_importable_without_ansible_core_and_the_plugin_class_imports_it() -> None:
    plugin = "hotsauce.modules.ansible_plugins.connection.hotsauce_chroot"
    script = (f"import sys, {plugin} as plugin\n"
              "from hotsauce.modules.sandbox import command_in_image\n"
              "command_in_image(__import__('pathlib').Path('/nonexistent'), ['true'])\n"
              "print(any(name.startswith('ansible') for name in sys.modules))\n"
              "from ansible.plugins.connection import ConnectionBase\n"
              "print(issubclass(plugin.Connection, ConnectionBase), plugin.Connection.__qualname__)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert result.stdout.split() == ["False", "True", "Connection"], result.stderr
