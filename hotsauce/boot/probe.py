"""The probe that runs checks inside a booted guest, and what it reports back.

Nothing is put into the image. The host attaches a small read-only disk
holding a shell script (serial `hotsauce-probe`) and arms it on the kernel
command line with systemd's `systemd.run=` (systemd-run-generator): the
generator makes `kernel-command-line.service` run the script once the basic
system is up. That generator also replaces the default target with its own
`kernel-command-line.target`, so the script starts the image's real default
target itself and waits for it, which is exactly "the guest reached its
default target"; then it runs each check and reports on the second serial
port (ttyS1, a file on the host). When the script ends, systemd powers the
guest off. It writes only to /run (a tmpfs) and ttyS1.

A line on ttyS1 is `HOTSAUCE-PROBE WORD ARGS...`; free text travels base64
encoded, so any command output survives the serial line.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROBE_SERIAL = "hotsauce-probe"
PROBE_DEVICE = f"/dev/disk/by-id/virtio-{PROBE_SERIAL}"
REPORT_PREFIX = "HOTSAUCE-PROBE"
# More than this of one check's output is cut: it travels over a serial line.
OUTPUT_LIMIT_BYTES = 65536
SECTOR_BYTES = 512

_PATH_LINES = r"""PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
"""

# The image's real default target: systemd.run's generator replaced default.target with its own.
_FIND_TARGET = r"""target=
for link in /etc/systemd/system/default.target /run/systemd/system/default.target \
            /usr/lib/systemd/system/default.target /lib/systemd/system/default.target; do
    if [ -e "$link" ]; then
        target=$(basename "$(readlink -f "$link")")
        break
    fi
done
[ -n "$target" ] || target=multi-user.target
"""

_SCRIPT_HEAD = r"""# hotsauce boot probe, read from a read-only disk the host attached.
""" + _PATH_LINES + r"""stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec 3>/dev/ttyS1
report() { echo "HOTSAUCE-PROBE $*" >&3; }
encoded() { base64 -w0; }
report started
""" + _FIND_TARGET + r"""report target "$target"
# The generator replaced default.target with its own target; start the real one.
if systemctl start "$target"; then
    echo "hotsauce-probe: reached $target"
    report reached "$target"
else
    echo "hotsauce-probe: $target failed to start"
    report target-failed "$target"
fi
report failed-units "$(systemctl --failed --plain --no-legend --no-pager | encoded)"
mkdir -p /run/hotsauce-probe
run_check() {
    command=$(echo "$2" | base64 -d)
    echo "hotsauce-probe: check $1: $command"
    (cd /root 2>/dev/null || cd /; HOME=/root; export HOME; exec /bin/sh -c "$command") \
        </dev/null >/run/hotsauce-probe/output 2>&1
    status=$?
    report check "$1" "$status" "$(head -c OUTPUT_LIMIT /run/hotsauce-probe/output | encoded)"
}
"""

_SCRIPT_TAIL = """report done
exit 0
"""


def probe_script(checks: Sequence[str]) -> str:
    """The script the guest runs: wait for the default target, then each check in order."""
    lines = [_SCRIPT_HEAD.replace("OUTPUT_LIMIT", str(OUTPUT_LIMIT_BYTES))]
    for index, check in enumerate(checks):
        # base64 keeps any quoting in the check away from the shell that reads the script.
        lines.append(f"run_check {index} {base64.b64encode(check.encode()).decode()}\n")
    lines.append(_SCRIPT_TAIL)
    return "".join(lines)


# mkosi's Autologin= in the same form: agetty logs root in with `login -f`, no password asked.
AUTOLOGIN_DROP_IN = "/run/systemd/system/serial-getty@.service.d/hotsauce-autologin.conf"
_AUTOLOGIN_UNIT = r"""[Service]
ExecStart=
ExecStart=-/sbin/agetty -o '-f -p -- \\u' --noclear --keep-baud --autologin root 115200,57600,38400,9600 - $TERM
"""


def autologin_script() -> str:
    """The script `hotsauce boot --console --autologin` runs in the guest before anything logs in:
    a runtime drop-in (in /run, a tmpfs: the image is not touched) makes every serial getty log
    root in, then the image's real default target starts, its serial getty with it."""
    return (
        "# hotsauce boot autologin, read from a read-only disk the host attached.\n"
        + _PATH_LINES
        + f"mkdir -p {shlex.quote(str(Path(AUTOLOGIN_DROP_IN).parent))}\n"
        + f"cat > {shlex.quote(AUTOLOGIN_DROP_IN)} <<'HOTSAUCE_UNIT'\n{_AUTOLOGIN_UNIT}HOTSAUCE_UNIT\n"
        + "systemctl daemon-reload\n"
        + _FIND_TARGET
        + 'exec systemctl start --no-block "$target"\n'
    )


def write_probe_disk(path: Path, checks: Sequence[str], *, script: str | None = None) -> Path:
    """A raw disk whose bytes are the script (the checks' probe unless `script` is given),
    padded with blank lines to whole sectors."""
    data = (probe_script(checks) if script is None else script).encode()
    padding = -len(data) % SECTOR_BYTES
    path.write_bytes(data + b"\n" * padding)
    return path


def probe_cmdline(run_command: str | None = None, *, power_off: bool = True) -> str:
    """Kernel command-line arguments that make systemd run the probe disk's script.

    systemd splits the value with shell-like quoting: the double quotes hold
    the command together, the single quotes hold `sh -c`'s script together.
    The script waits for udev to create the disk's by-id link first. With
    `power_off`, the guest powers off when the script ends (the checks); without,
    it stays up (an interactive console).
    """
    loader = f"udevadm wait --timeout=120 {PROBE_DEVICE}; exec /bin/sh {PROBE_DEVICE}"
    # A firmware boot names a loader inside the guest instead: GRUB re-quotes what it passes on.
    run = run_command or f'"/bin/sh -c {shlex.quote(loader)}"'
    arguments = [
        "systemd.unit=kernel-command-line.target",  # also when /etc sets default.target
        f"systemd.run={run}",
    ]
    # Said either way: left out, systemd 252 powers the guest off when the command ends.
    action = "poweroff" if power_off else "none"
    arguments += [f"systemd.run_success_action={action}", f"systemd.run_failure_action={action}"]
    return " ".join(arguments)


@dataclass(frozen=True)
class ReportedCheck:
    index: int
    status: int
    output: str


@dataclass
class ProbeReport:
    """What the probe has said so far on ttyS1."""

    started: bool = False
    target: str | None = None
    reached: bool = False
    target_failed: bool = False
    failed_units: tuple[str, ...] = ()  # units in the failed state once the target was started
    checks: list[ReportedCheck] = field(default_factory=list)
    done: bool = False


def _decoded(text: str) -> str:
    try:
        return base64.b64decode(text, validate=False).decode(errors="replace")
    except ValueError:
        return f"(unreadable output: {text[:80]!r})"


def parse_report(text: str) -> ProbeReport:
    report = ProbeReport()
    for raw_line in text.splitlines():
        words = raw_line.strip().split(" ")
        if len(words) < 2 or words[0] != REPORT_PREFIX:
            continue
        word, args = words[1], words[2:]
        if word == "started":
            report.started = True
        elif word == "target" and args:
            report.target = args[0]
        elif word == "reached":
            report.reached = True
        elif word == "target-failed":
            report.target_failed = True
        elif word == "failed-units":
            report.failed_units = tuple(
                line.split()[0]
                for line in _decoded(args[0] if args else "").splitlines()
                if line.split()
            )
        elif word == "check" and len(args) >= 2:
            output = _decoded(args[2]) if len(args) > 2 else ""
            report.checks.append(ReportedCheck(int(args[0]), int(args[1]), output))
        elif word == "done":
            report.done = True
    return report


# Console lines that mean the boot cannot succeed any more, with what they mean.
_FATAL_CONSOLE_LINES = (
    (re.compile(r"Kernel panic - not syncing.*"), "kernel panic"),
    (re.compile(r"ALERT!.*"), "the initramfs could not mount the root"),
    (
        re.compile(r"Gave up waiting for root (file system )?device.*"),
        "the root device never appeared",
    ),
    (re.compile(r"You are in emergency mode.*"), "systemd entered emergency mode"),
    (re.compile(r"Welcome to emergency mode.*"), "systemd entered emergency mode"),
)


def fatal_console_line(console_text: str) -> str | None:
    """A one-line reason when the serial console already shows the boot has failed."""
    for pattern, meaning in _FATAL_CONSOLE_LINES:
        match = pattern.search(console_text)
        if match:
            return f"{meaning}: {match.group(0).strip()}"
    return None


def last_console_line(console_text: str) -> str:
    lines = [line.strip() for line in console_text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else "(the serial console stayed empty)"
