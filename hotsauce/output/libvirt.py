"""libvirt.xml: a domain that `virsh define` accepts and that boots the set where its files are.

libvirt wants absolute paths, and whether a domain may use KVM depends on
the host that runs it; so the file is written for a place and a host:
when a folder set is published (`-o DIR`), and when a set is unpacked or
was moved (`hotsauce unpack`). Inside a tar.gz the file names are relative
to the set and the domain uses TCG: `hotsauce unpack` rewrites it.

An EC2-style set boots its kernel and ramdisk directly; a whole-disk set
boots through its firmware: UEFI when the manifest lists it, BIOS otherwise.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from hotsauce.boot.qemu import GUEST_MEMORY_MB, Accel, choose_accel, guest_cpus, kvm_device_usable
from hotsauce.errors import KvmUnusable, UnknownLayout
from hotsauce.events import Emit, Event, ignore
from hotsauce.output.imageset import (
    DISK_LAYOUT,
    EC2_LAYOUT,
    LIBVIRT_NAME,
    MANIFEST_NAME,
    SET_FILE_MODE,
    Manifest,
    write_checksum,
)

UEFI = "uefi"
BIOS = "bios"
BOOT_MODES = (BIOS, UEFI)
DISK_TARGET = "vda"  # the one disk; the guest finds its root by label, not by this name
# libvirt's domain `type` for each accelerator hotsauce boots with.
DOMAIN_TYPES = {Accel.KVM: "kvm", Accel.TCG: "qemu"}


def domain_name(manifest: Manifest) -> str:
    """Unique per build, so sets of the same image can be defined side by side."""
    return f"{manifest.hostname or 'hotsauce'}-{manifest.build_id}"


def firmware_of(manifest: Manifest) -> str | None:
    """How the domain starts: None for the direct kernel boot, else `bios` or `uefi`."""
    if manifest.layout == EC2_LAYOUT:
        return None
    if manifest.layout != DISK_LAYOUT:
        raise UnknownLayout(f"{MANIFEST_NAME}: layout {manifest.layout!r}: expected {EC2_LAYOUT} or {DISK_LAYOUT}")
    unknown = sorted(set(manifest.boot_modes) - set(BOOT_MODES))
    if unknown:
        raise UnknownLayout(f"{MANIFEST_NAME}: boot_modes {unknown}: expected {' and/or '.join(BOOT_MODES)}")
    # Both listed: UEFI, the firmware current machines boot with.
    return UEFI if UEFI in manifest.boot_modes else BIOS


def domain_xml(manifest: Manifest, placed_at: Path | None, *, accel: Accel, network: str | None = None) -> str:
    """The domain as text. File paths are under `placed_at` (absolute), or bare names without it.

    `network` names a libvirt network to attach to; without it the guest gets
    user-mode networking, which needs nothing from the host.
    """

    def path_of(name: str) -> str:
        return str(placed_at.absolute() / name) if placed_at is not None else name

    domain = ET.Element("domain", type=DOMAIN_TYPES[accel])
    ET.SubElement(domain, "name").text = domain_name(manifest)
    ET.SubElement(domain, "memory", unit="MiB").text = str(GUEST_MEMORY_MB)
    ET.SubElement(domain, "vcpu").text = str(guest_cpus(accel))
    _add_os(domain, manifest, path_of)
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    devices = ET.SubElement(domain, "devices")
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type=manifest.image_format)
    ET.SubElement(disk, "source", file=path_of(manifest.root))
    ET.SubElement(disk, "target", dev=DISK_TARGET, bus="virtio")
    if network is None:
        interface = ET.SubElement(devices, "interface", type="user")
    else:
        interface = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(interface, "source", network=network)
    ET.SubElement(interface, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    ET.indent(domain)
    return _header(manifest, placed_at, accel) + ET.tostring(domain, encoding="unicode") + "\n"


def _add_os(domain: ET.Element, manifest: Manifest, path_of: Callable[[str], str]) -> None:
    firmware = firmware_of(manifest)
    os_element = ET.SubElement(domain, "os", firmware="efi") if firmware == UEFI else ET.SubElement(domain, "os")
    ET.SubElement(os_element, "type", arch="x86_64").text = "hvm"
    if firmware == UEFI:
        # Debian's own images carry no Microsoft-signed shim: no secure boot.
        firmware_element = ET.SubElement(os_element, "firmware")
        ET.SubElement(firmware_element, "feature", enabled="no", name="secure-boot")
    if firmware is None and manifest.kernel:
        ET.SubElement(os_element, "kernel").text = path_of(manifest.kernel)
        if manifest.ramdisk:
            ET.SubElement(os_element, "initrd").text = path_of(manifest.ramdisk)
        ET.SubElement(os_element, "cmdline").text = manifest.kernel_cmdline
    else:
        ET.SubElement(os_element, "boot", dev="hd")


def _header(manifest: Manifest, placed_at: Path | None, accel: Accel) -> str:
    where = (
        f"for its files in {placed_at.absolute()}" if placed_at is not None
        else "with file names relative to the set: `hotsauce unpack` writes it for where they land"
    )
    if placed_at is None:
        why = "software emulation until then"
    elif accel is Accel.KVM:
        why = "KVM ran the set's kernel on the host that wrote this"
    else:
        why = "software emulation, as KVM did not run the set's kernel on the host that wrote this"
    comment = (f"written by hotsauce {manifest.hotsauce_version} for build {manifest.build_id}, {where}; "
               f"type '{DOMAIN_TYPES[accel]}': {why}")
    return f"<!-- {comment.replace('--', '-')} -->\n"  # a comment may not hold a double hyphen


def write_libvirt_xml(folder: Path, manifest: Manifest, *, placed_at: Path | None = None,
                      accel: Accel = Accel.TCG, network: str | None = None) -> Path:
    """libvirt.xml in `folder`, for the set's files at `placed_at` (by default: relative names)."""
    path = folder / LIBVIRT_NAME
    path.write_text(domain_xml(manifest, placed_at, accel=accel, network=network))
    return path


def accel_for(folder: Path, manifest: Manifest, requested: Accel = Accel.AUTO, *,
              remember_in: Path | None = None) -> Accel:
    """KVM where this host runs the set's kernel with it (the probe `hotsauce boot` uses), else TCG.

    A set without a kernel gives the probe nothing to boot: TCG, unless KVM
    is asked for by name.
    """
    if manifest.kernel:
        return choose_accel(requested, folder / manifest.kernel, remember_in=remember_in)
    if requested is Accel.KVM:
        if not kvm_device_usable():
            raise KvmUnusable("KVM is not available here (/dev/kvm); use --accel tcg")
        return Accel.KVM
    return Accel.TCG


def place_set(folder: Path, placed_at: Path, *, accel: Accel = Accel.AUTO, network: str | None = None,
              emit: Emit = ignore, probe_cache: Path | None = None) -> Path:
    """Rewrite the libvirt.xml of the set in `folder` (and its checksum) for its files at `placed_at`.

    `folder` is where the files are now, `placed_at` where they will be
    (the same, or the final name of a folder about to be renamed there).
    """
    manifest = Manifest.read(folder)
    chosen = accel_for(folder, manifest, accel, remember_in=probe_cache)
    path = write_libvirt_xml(folder, manifest, placed_at=placed_at, accel=chosen, network=network)
    path.chmod(SET_FILE_MODE)
    write_checksum(path).chmod(SET_FILE_MODE)
    emit(Event("info", "publish", f"{LIBVIRT_NAME}: domain {domain_name(manifest)}, "
               f"type '{DOMAIN_TYPES[chosen]}', files in {placed_at.absolute()}",
               {"domain": domain_name(manifest), "accel": chosen.value}))
    return path
