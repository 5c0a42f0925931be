"""Who an image is, and what of the build it must not carry.

`set_identity` runs before the modules: the image gets its own host name,
DHCP on its first interface and a serial console, and loses the build
host's name and resolver that bootstrapping copied in. `scrub_image` runs
after them: what must be unique per machine (machine-id, SSH host keys) is
left to be made at first boot, and apt's lists and caches go.

Every path is resolved through hotsauce.rootpath, so a symlink in the image
never makes hotsauce write or delete a file of the build host.
"""

from __future__ import annotations

from pathlib import Path

from hotsauce import rootpath
from hotsauce.host.release import remove

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
# Where packages put systemd units; merged-/usr images have both as one.
SYSTEMD_UNIT_FOLDERS = ("/usr/lib/systemd/system", "/lib/systemd/system")
SYSTEMD_LOCAL_UNITS = "/etc/systemd/system"
SERIAL_CONSOLE = "ttyS0"

IFUPDOWN_DHCP_FILE = "/etc/network/interfaces.d/hotsauce-dhcp"
# ifupdown's patterns: "/e*/1" is the first interface whose name starts with
# "e" (eth0, ens3, enp0s3, whatever the hardware names it), called "firstnic".
IFUPDOWN_DHCP = """\
# Written by hotsauce: DHCP on the first Ethernet interface, whatever its name.
allow-hotplug /e*/1=firstnic
auto /e*/1=firstnic
iface firstnic inet dhcp
"""
NETWORKD_DHCP_FILE = "/etc/systemd/network/80-hotsauce-dhcp.network"
NETWORKD_DHCP = """\
# Written by hotsauce: DHCP on Ethernet interfaces.
[Match]
Name=en* eth*

[Network]
DHCP=yes
"""

SSH_KEYGEN_UNIT = "hotsauce-ssh-host-keys.service"
# sshd refuses to start without host keys; each machine makes its own, once.
SSH_KEYGEN = """\
[Unit]
Description=Generate this machine's SSH host keys (written by hotsauce)
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key
Before=ssh.service sshd.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target ssh.service
"""


def hosts_file(hostname: str) -> str:
    return (
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{hostname}\n"
        "\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
    )


def set_identity(root: Path, hostname: str) -> None:
    """Before modules run: the image's own name, DHCP on its first interface, a serial console.

    The build host's /etc/hostname and /etc/resolv.conf, which bootstrapping
    copies in, are replaced; while modules run, hotsauce.modules.chroot.build_chroot
    lends them the host's resolver.
    """
    rootpath.write_file(root, "/etc/hostname", f"{hostname}\n")
    rootpath.write_file(root, "/etc/hosts", hosts_file(hostname))
    _drop_host_resolver(root)
    _configure_dhcp(root)
    _enable_serial_console(root)


def scrub_image(root: Path) -> None:
    """After modules ran: nothing per-machine, nothing of the build, no apt lists or caches."""
    _reset_machine_id(root)
    _remove_ssh_host_keys(root)
    _empty_apt_state(root)
    _drop_host_resolver(root, leave_placeholder=False)


# --- set_identity's parts ---------------------------------------------------


def _drop_host_resolver(root: Path, *, leave_placeholder: bool = True) -> None:
    """Remove a resolv.conf that is a copy of the build host's (or our empty placeholder).

    A symlink (systemd-resolved's stub) or a file a module wrote on purpose
    belongs to the image and stays. The placeholder keeps a file for the
    pipeline to bind or copy the host's resolver onto while modules run.
    """
    conf = rootpath.parent_inside(root, "/etc/resolv.conf")
    if conf.is_symlink() or not conf.is_file():
        return
    content = conf.read_bytes()
    host_content = HOST_RESOLV_CONF.read_bytes() if HOST_RESOLV_CONF.is_file() else None
    if content.strip() and content != host_content:
        return
    if leave_placeholder:
        rootpath.write_file(root, "/etc/resolv.conf", "")
    else:
        rootpath.remove(root, "/etc/resolv.conf")


def _exists(root: Path, path: str) -> bool:
    return rootpath.inside(root, path).exists()


def _configure_dhcp(root: Path) -> None:
    """ifupdown when the image has it (dhclient writes resolv.conf), else systemd-networkd."""
    if _exists(root, "/sbin/ifup") or _exists(root, "/usr/sbin/ifup"):
        rootpath.write_file(root, IFUPDOWN_DHCP_FILE, IFUPDOWN_DHCP)
        _make_ifupdown_read_its_folder(root)
    elif folder := _unit_folder(root, "systemd-networkd.service"):
        rootpath.write_file(root, NETWORKD_DHCP_FILE, NETWORKD_DHCP)
        _enable_unit(root, "systemd-networkd.service", "multi-user.target", folder=folder)


def _make_ifupdown_read_its_folder(root: Path) -> None:
    interfaces = rootpath.inside(root, "/etc/network/interfaces")
    text = interfaces.read_text() if interfaces.is_file() else ""
    if "source /etc/network/interfaces.d/*" not in text and "source-directory" not in text:
        addition = "source /etc/network/interfaces.d/*\n"
        rootpath.write_file(
            root, "/etc/network/interfaces", text + ("\n" if text else "") + addition
        )


def _enable_serial_console(root: Path) -> None:
    if folder := _unit_folder(root, "serial-getty@.service"):
        _enable_unit(
            root,
            f"serial-getty@{SERIAL_CONSOLE}.service",
            "getty.target",
            template="serial-getty@.service",
            folder=folder,
        )


def _unit_folder(root: Path, unit: str) -> str | None:
    """The folder of the image that holds `unit`, None when systemd or the unit is missing."""
    return next((f for f in SYSTEMD_UNIT_FOLDERS if _exists(root, f"{f}/{unit}")), None)


def _enable_unit(
    root: Path, unit: str, wanted_by: str, *, folder: str, template: str | None = None
) -> None:
    """What `systemctl enable` does for a unit with one WantedBy, without running systemctl."""
    rootpath.symlink(
        root, f"{SYSTEMD_LOCAL_UNITS}/{wanted_by}.wants/{unit}", f"{folder}/{template or unit}"
    )


# --- scrub_image's parts ----------------------------------------------------


def _reset_machine_id(root: Path) -> None:
    """An empty machine-id: systemd makes a new one at first boot and commits it."""
    rootpath.write_file(root, "/etc/machine-id", "", mode=0o444)
    dbus_folder = rootpath.inside(root, "/var/lib/dbus")
    if dbus_folder.is_dir():
        rootpath.symlink(root, "/var/lib/dbus/machine-id", "/etc/machine-id")


def _remove_ssh_host_keys(root: Path) -> None:
    ssh_folder = rootpath.inside(root, "/etc/ssh")
    if ssh_folder.is_dir():
        for key in ssh_folder.glob("ssh_host_*"):
            key.unlink()
    if _exists(root, "/usr/sbin/sshd"):
        rootpath.write_file(root, f"{SYSTEMD_LOCAL_UNITS}/{SSH_KEYGEN_UNIT}", SSH_KEYGEN)
        for wanted_by in ("multi-user.target", "ssh.service"):
            _enable_unit(root, SSH_KEYGEN_UNIT, wanted_by, folder=SYSTEMD_LOCAL_UNITS)


def _empty_apt_state(root: Path) -> None:
    """No package lists, no downloaded .debs, no binary caches: apt update makes them again."""
    # The lock files and partial/ folders stay: apt expects them, owned by its _apt user.
    _empty_folder(root, "/var/lib/apt/lists", keep=("lock", "partial"))
    _empty_folder(root, "/var/lib/apt/lists/partial")
    _empty_folder(root, "/var/cache/apt", keep=("archives",))
    _empty_folder(root, "/var/cache/apt/archives", keep=("lock", "partial"))
    _empty_folder(root, "/var/cache/apt/archives/partial")


def _empty_folder(root: Path, path: str, keep: tuple[str, ...] = ()) -> None:
    folder = rootpath.inside(root, path)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name in keep:
            continue
        remove(entry)
