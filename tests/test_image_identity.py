"""An image's own identity, nothing of the build host, and paths that stay in the image."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotsauce import rootpath
from hotsauce.image import identity as image_identity
from hotsauce.image.identity import scrub_image, set_identity

HOST_RESOLV_CONF = Path("/etc/resolv.conf")


def make_root(root: Path) -> Path:
    """A small image as mmdebstrap leaves it: the host's name and resolver copied in."""
    for folder in (
        "etc/network/interfaces.d",
        "usr/lib/systemd/system",
        "usr/sbin",
        "sbin",
        "var/lib/dbus",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "etc/ssh",
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "etc/hostname").write_text("buildhost\n")
    (root / "etc/resolv.conf").write_bytes(HOST_RESOLV_CONF.read_bytes())
    (root / "etc/network/interfaces").write_text("source /etc/network/interfaces.d/*\n")
    (root / "usr/lib/systemd/system/serial-getty@.service").write_text("[Unit]\n")
    (root / "sbin/ifup").write_text("")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/dbus/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/apt/lists/mirror.invalid_debian_dists_bookworm_InRelease").write_text("x")
    (root / "var/lib/apt/lists/lock").write_text("")
    (root / "var/cache/apt/pkgcache.bin").write_text("x")
    (root / "var/cache/apt/archives/curl_8_amd64.deb").write_text("x")
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("secret")
    (root / "etc/ssh/ssh_host_ed25519_key.pub").write_text("public")
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    if not HOST_RESOLV_CONF.is_file():
        pytest.skip("the host has no /etc/resolv.conf to recognise")
    return make_root(tmp_path / "root")


def test_set_identity_names_the_image_and_resolves_its_name(root: Path) -> None:
    set_identity(root, "web1")
    assert (root / "etc/hostname").read_text() == "web1\n"
    assert "127.0.1.1\tweb1" in (root / "etc/hosts").read_text()


def test_set_identity_leaves_no_trace_of_the_build_hosts_resolver(root: Path) -> None:
    set_identity(root, "web1")
    assert (root / "etc/resolv.conf").read_text() == ""


def test_set_identity_configures_dhcp_on_the_first_interface_and_a_serial_console(
    root: Path,
) -> None:
    set_identity(root, "web1")
    dhcp = (root / "etc/network/interfaces.d/hotsauce-dhcp").read_text()
    assert "iface firstnic inet dhcp" in dhcp
    assert "auto /e*/1=firstnic" in dhcp
    getty = root / "etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
    assert getty.is_symlink()
    assert str(getty.readlink()) == "/usr/lib/systemd/system/serial-getty@.service"


def test_without_ifupdown_systemd_networkd_does_dhcp(root: Path) -> None:
    (root / "sbin/ifup").unlink()
    (root / "usr/lib/systemd/system/systemd-networkd.service").write_text("[Unit]\n")
    set_identity(root, "web1")
    assert "DHCP=yes" in (root / "etc/systemd/network/80-hotsauce-dhcp.network").read_text()
    assert (
        root / "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
    ).is_symlink()


def test_scrub_image_leaves_nothing_per_machine_and_no_apt_state(root: Path) -> None:
    set_identity(root, "web1")
    scrub_image(root)
    assert (root / "etc/machine-id").read_text() == ""
    assert str((root / "var/lib/dbus/machine-id").readlink()) == "/etc/machine-id"
    assert list((root / "etc/ssh").iterdir()) == []
    assert sorted(p.name for p in (root / "var/lib/apt/lists").iterdir()) == ["lock", "partial"]
    assert [p.name for p in (root / "var/cache/apt").iterdir()] == ["archives"]
    assert [p.name for p in (root / "var/cache/apt/archives").iterdir()] == ["partial"]
    assert not (root / "etc/resolv.conf").exists()
    assert (root / "etc/hostname").read_text() == "web1\n"


def test_scrub_image_makes_ssh_host_keys_at_first_boot_when_sshd_is_installed(root: Path) -> None:
    (root / "usr/sbin/sshd").write_text("")
    scrub_image(root)
    unit = root / "etc/systemd/system" / image_identity.SSH_KEYGEN_UNIT
    assert "ssh-keygen -A" in unit.read_text()
    assert (root / "etc/systemd/system/ssh.service.wants" / unit.name).is_symlink()


def test_scrub_image_keeps_a_resolver_the_image_chose(root: Path) -> None:
    (root / "etc/resolv.conf").unlink()
    (root / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    scrub_image(root)
    assert (root / "etc/resolv.conf").is_symlink()


def test_planted_symlinks_to_outside_paths_are_not_followed_out_of_the_root(
    root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "lists").mkdir(parents=True)
    (outside / "hostname").write_text("the host's name\n")
    (outside / "lists" / "keep-me").write_text("x")
    (root / "etc/hostname").unlink()
    (root / "etc/hostname").symlink_to(outside / "hostname")  # absolute: means the image's path
    (root / "etc/network/interfaces.d").rmdir()
    (root / "etc/network/interfaces.d").symlink_to("../../../../../../../../" + str(outside))
    for folder in ("var/lib/apt/lists", "etc/ssh"):
        target = root / folder
        for child in target.iterdir():
            child.unlink() if child.is_file() else child.rmdir()
        target.rmdir()
        target.symlink_to(outside / "lists")
    set_identity(root, "web1")
    scrub_image(root)
    assert (outside / "hostname").read_text() == "the host's name\n"
    assert sorted(p.name for p in outside.rglob("*")) == ["hostname", "keep-me", "lists"]
    assert (root / "etc/hostname").read_text() == "web1\n"
    image_outside = root / str(outside).lstrip("/")
    assert (image_outside / "hotsauce-dhcp").is_file()  # the image's own path of that name


def test_inside_resolves_as_a_chroot_would(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "etc").mkdir()
    (root / "etc/absolute").symlink_to("/usr/lib")
    (root / "etc/up").symlink_to("../../../../..")
    assert rootpath.inside(root, "/lib/x") == root / "usr/lib/x"
    assert rootpath.inside(root, "etc/absolute/y") == root / "usr/lib/y"
    assert rootpath.inside(root, "/etc/up/etc") == root / "etc"
    assert rootpath.inside(root, "/../../etc") == root / "etc"


def test_inside_refuses_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("/loop")
    with pytest.raises(rootpath.PathEscapes, match="too many levels"):
        rootpath.inside(tmp_path, "/loop/x")
