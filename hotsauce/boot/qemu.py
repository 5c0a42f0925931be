"""Starting QEMU for an image set: the command line, and whether KVM really works.

The root image is always attached with `snapshot=on`: QEMU writes the
guest's changes to a temporary file of its own, so a boot never changes the
image. There is never a display; consoles are serial ports.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from hotsauce.errors import ConfigError, KvmUnusable, QemuMissing
from hotsauce.host import ledger
from hotsauce.host.proc import child_process

QEMU_BINARY = "qemu-system-x86_64"
GUEST_MEMORY_MB = 1024
GUEST_CPUS = 2
# A guest that KVM can run prints its panic within a few seconds; one that
# KVM cannot run (a nested VM without the features) hangs silently instead.
KVM_PROBE_SECONDS = 15.0
# The probe runs beside a build's modules at the lowest priority: a guest that KVM hangs spins a
# whole core (two CPU-bound processes took 2.9 s beside a plain probe, 2.0 s beside a niced one, 1.7-2.1 s
# alone). A probe that had less CPU than this by its deadline was starved, not hung: it says nothing.
KVM_PROBE_NICENESS = 19
KVM_PROBE_MIN_CPU_SECONDS = 5.0
# Under KVM the kernel's first console line comes within half a second (here, under TCG, ten times
# slower, after 1.5 s); a guest that KVM hangs never prints it. A probe without it by then, having
# had the CPU to print it, is stopped as hung: until stopped, a hung guest spins a core, mostly in
# the host kernel's KVM code, where niceness takes little of it back.
KVM_PROBE_FIRST_LINE_SECONDS = 5.0
KVM_PROBE_FIRST_LINE_CPU_SECONDS = 2.0
KERNEL_FIRST_LINE = "Linux version"


class Accel(StrEnum):
    TCG = "tcg"  # software emulation: slow, works everywhere
    KVM = "kvm"  # hardware virtualization, only after a probe shows it works
    AUTO = "auto"  # KVM when the probe shows it works, TCG otherwise


def guest_cpus(accel: Accel) -> int:
    """Two virtual CPUs under KVM; one under TCG. Emulated CPUs see another's live kernel text
    patching late: a trixie guest (Linux 6.12) once took an int3 Oops in get_random_u32, a jump
    label being patched when the random pool came ready, and panicked (2026-11-28)."""
    return GUEST_CPUS if accel is Accel.KVM else 1


@dataclass(frozen=True)
class Drive:
    path: Path
    image_format: str  # raw | qcow2
    snapshot: bool = True  # writes go to a throw-away overlay, never to the file
    read_only: bool = False
    serial: str | None = None  # shows in the guest as /dev/disk/by-id/virtio-SERIAL

    def arguments(self, drive_id: str) -> list[str]:
        """-drive for the file and -device for the virtio disk (where a serial number goes)."""
        options = [f"file={self.path}", f"format={self.image_format}", "if=none", f"id={drive_id}"]
        if self.snapshot:
            options.append("snapshot=on")
        if self.read_only:
            options.append("readonly=on")
        device = ["virtio-blk-pci", f"drive={drive_id}"]
        if self.serial:
            device.append(f"serial={self.serial}")
        # QEMU's option parser splits on commas; a doubled comma is a literal one.
        drive = ",".join(option.replace(",", ",,") for option in options)
        return ["-drive", drive, "-device", ",".join(device)]


@dataclass(frozen=True)
class Machine:
    """One direct-kernel-boot guest: kernel, ramdisk, virtio drives, serial ports."""

    kernel: Path
    ramdisk: Path | None
    cmdline: str
    drives: tuple[Drive, ...]
    serial_files: tuple[Path, ...] = ()  # ttyS0, ttyS1, ... each written to a file
    accel: Accel = Accel.TCG
    interactive: bool = False  # ttyS0 on this process's stdin/stdout instead of a file

    def argv(self) -> list[str]:
        argv = [
            qemu_binary(),
            "-accel", self.accel.value,
            "-m", str(GUEST_MEMORY_MB),
            "-smp", str(guest_cpus(self.accel)),
            "-no-reboot",  # a reboot (panic=, initramfs giving up) ends QEMU
            "-kernel", str(self.kernel),
            "-append", self.cmdline,
        ]  # fmt: skip
        if self.ramdisk is not None:
            argv += ["-initrd", str(self.ramdisk)]
        for number, drive in enumerate(self.drives):
            argv += drive.arguments(f"disk{number}")
        # User networking without a way out: the guest gets a NIC and DHCP,
        # as on a first boot, but reaches nothing beyond QEMU.
        argv += ["-nic", "user,model=virtio-net-pci,restrict=on"]
        if self.interactive:
            argv += ["-nographic"]  # ttyS0 and the monitor on stdio (Ctrl-A X quits)
        else:
            argv += ["-display", "none", "-monitor", "none"]
            for path in self.serial_files:
                argv += ["-serial", f"file:{path}"]
        return argv


def qemu_binary() -> str:
    path = shutil.which(QEMU_BINARY)
    if path is None:
        raise QemuMissing(
            f"{QEMU_BINARY} is not installed (Debian: apt-get install qemu-system-x86)"
        )
    return path


def kvm_device_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


_kvm_verdicts: dict[str, bool] = {}  # by the kernel's digest


@dataclass
class _RunningProbe:
    """A probe QEMU under way: a guest that KVM runs prints its first line soon and panics, and QEMU
    exits; one that KVM hangs prints nothing and is still running at the deadline."""

    qemu: subprocess.Popen[bytes]
    console: Path
    deadline: float
    first_line_by: float
    hung: bool = False  # stopped by stop_when_silent

    @classmethod
    def watching(cls, qemu: subprocess.Popen[bytes], console: Path, seconds: float) -> _RunningProbe:
        now = time.monotonic()
        return cls(qemu, console, now + seconds, now + min(seconds, KVM_PROBE_FIRST_LINE_SECONDS))

    def verdict(self) -> bool | None:
        """True: the guest got to its panic; False: it hung with CPU to spare; None: starved."""
        while (self.qemu.poll() is None and time.monotonic() < self.deadline
               and not self.hung and not self.silent()):
            time.sleep(0.2)
        if "Kernel panic" in self._console():
            return True
        if self.hung or self.silent():
            return False
        if self.qemu.poll() is None and cpu_seconds(self.qemu.pid) < KVM_PROBE_MIN_CPU_SECONDS:
            return None
        return False

    def silent(self) -> bool:
        """Still running past `first_line_by` without the kernel's first line, though it had the CPU."""
        return (self.qemu.poll() is None and time.monotonic() >= self.first_line_by
                and KERNEL_FIRST_LINE not in self._console()
                and cpu_seconds(self.qemu.pid) >= KVM_PROBE_FIRST_LINE_CPU_SECONDS)

    def stop_when_silent(self, done: threading.Event) -> None:
        """Beside the build: stop a guest that is silent, so it spins no longer than it must."""
        while not done.wait(0.2) and self.qemu.poll() is None:
            if self.silent():
                self.hung = True
                self.qemu.kill()
                return

    def _console(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a running process, from /proc (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    user, system = int(fields[11]), int(fields[12])  # utime and stime, the 14th and 15th fields
    return (user + system) / os.sysconf("SC_CLK_TCK")


_probes_running: dict[str, _RunningProbe] = {}  # by the kernel's digest


def kvm_runs_kernel(kernel: Path, *, seconds: float = KVM_PROBE_SECONDS, remember_in: Path | None = None) -> bool:
    """Whether KVM gets this kernel through its boot. A probe that finds KVM hanging costs its
    whole `seconds`, so the verdict is remembered: in this process, and in `remember_in` (a
    cache folder the caller was told to write) per boot of this host and per kernel. A probe of
    the same kernel already started by kvm_probe_started is waited for, not started again."""
    if not kvm_device_usable():
        return False
    digest = _kernel_digest(kernel)
    known = _known_verdict(digest, remember_in)
    if known is not None:
        return known
    running = _probes_running.get(digest)
    works = running.verdict() if running is not None else _probe_kvm(kernel, seconds)
    if works is None:
        return False  # a starved probe: TCG this time, and the next build probes again
    if remember_in is not None:
        with suppress(OSError):
            _remember_verdict(_verdict_file(remember_in, digest), works)
    _kvm_verdicts[digest] = works
    return works


@contextmanager
def kvm_probe_started(kernel: Path, *, seconds: float = KVM_PROBE_SECONDS,
                      remember_in: Path | None = None) -> Iterator[None]:
    """The probe of `kernel` running beside whatever the block does, so that kvm_runs_kernel of
    the same kernel later waits only for what is left of it. Nothing starts when the verdict is
    known already; the probe's QEMU is stopped when the block ends."""
    digest = _kernel_digest(kernel)
    if not kvm_device_usable() or _known_verdict(digest, remember_in) is not None or digest in _probes_running:
        yield
        return
    # Recorded in the ledger: a build killed while its probe runs leaves the folder to `hotsauce cleanup`.
    with ledger.temporary_folder("hotsauce-kvm-probe-") as temp, _probe_qemu(kernel, temp) as qemu:
        probe = _probes_running[digest] = _RunningProbe.watching(qemu, temp / "console.log", seconds)
        done = threading.Event()
        watcher = threading.Thread(target=probe.stop_when_silent, args=(done,), name="kvm-probe", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()
            del _probes_running[digest]


def _known_verdict(digest: str, remember_in: Path | None) -> bool | None:
    if digest in _kvm_verdicts:
        return _kvm_verdicts[digest]
    remembered = _verdict_file(remember_in, digest) if remember_in is not None else None
    if remembered is not None and remembered.is_file():
        _kvm_verdicts[digest] = remembered.read_text() == "kvm"
        return _kvm_verdicts[digest]
    return None


def _kernel_digest(kernel: Path) -> str:
    return hashlib.sha256(kernel.read_bytes()).hexdigest()


def _verdict_file(folder: Path, digest: str) -> Path:
    """The verdict's place: a folder per host boot (a reboot may change what KVM can do), a file per
    kernel content."""
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return folder / boot_id / digest


def _remember_verdict(remembered: Path, works: bool) -> None:
    """Write the verdict; verdicts of earlier host boots are of no use any more and go."""
    remembered.parent.mkdir(parents=True, exist_ok=True)
    for earlier in remembered.parent.parent.iterdir():
        if earlier != remembered.parent:
            shutil.rmtree(earlier, ignore_errors=True)
    partial = remembered.with_suffix(f".{os.getpid()}")
    partial.write_text("kvm" if works else "tcg")
    partial.replace(remembered)


def _probe_qemu(kernel: Path, temp: Path) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """QEMU booting `kernel` under KVM with no ramdisk and no root: under working KVM it panics
    within seconds and, with -no-reboot and panic=-1, exits."""
    probe = Machine(
        kernel=kernel,
        ramdisk=None,
        cmdline="console=ttyS0 panic=-1",
        drives=(),
        serial_files=(temp / "console.log",),
        accel=Accel.KVM,
    )
    # Niced before QEMU starts, so its vCPU threads inherit it (a nice value is per thread).
    return child_process(["nice", "-n", str(KVM_PROBE_NICENESS), *probe.argv()], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)


def _probe_kvm(kernel: Path, seconds: float) -> bool | None:
    """Probe now: if QEMU is still running after `seconds`, KVM hangs the guest here."""
    with ledger.temporary_folder("hotsauce-kvm-probe-") as temp, _probe_qemu(kernel, temp) as qemu:
        return _RunningProbe.watching(qemu, temp / "console.log", seconds).verdict()


def choose_accel(requested: Accel, kernel: Path, *, remember_in: Path | None = None) -> Accel:
    """The accelerator to boot with; never one that would hang the guest."""
    if requested is Accel.TCG:
        return Accel.TCG
    if kvm_runs_kernel(kernel, remember_in=remember_in):
        return Accel.KVM
    if requested is Accel.KVM:
        raise KvmUnusable(
            "KVM cannot run this kernel here (the guest hangs in early boot); use --accel tcg"
        )
    return Accel.TCG


def parse_accel(value: str) -> Accel:
    try:
        return Accel(value)
    except ValueError:
        choices = ", ".join(a.value for a in Accel)
        raise ConfigError(f"accel {value!r}: expected one of {choices}") from None
