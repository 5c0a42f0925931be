"""Ansible connection into an image root, through a bubblewrap sandbox.

Ours rather than community.general's chroot plugin: that collection is not
reachable from the build hosts, and the `ansible` package that carries it
weighs about 547 MB for this one file. Everything runs inside the root, and
files travel through `/bin/sh -c 'cat ...'` run in the image, so paths
resolve through the image's own symlinks, never the host's.

The sandbox (`sandbox_argv`) is here, not in hotsauce, because this file also
ships alone in an Ansible collection used without hotsauce installed; hotsauce
imports it from here (hotsauce.modules.sandbox), so there is one sandbox.
Each command gets its own mount, UTS, IPC and PID namespaces (bwrap), a fresh
/proc, a minimal /dev, a tmpfs /run, a read-only /sys, and loses the
capabilities that reach the host's kernel state (modules, clock, reboot, ...).
What a role does to "the running system" is absorbed:
- hostname: the sandbox's own UTS namespace; it starts with the image's /etc/hostname;
- sysctl: /proc/sys is a private writable copy, kept for the build in its state folder;
- swapon, swapoff, modprobe, insmod, rmmod, udevadm trigger/settle/control: succeed
  without acting (a stub is bound over the program inside the sandbox only);
- iptables, ip6tables, nft, ip, tc, bridge, ethtool: run in a private network namespace
  held for the build, so rules persist between tasks and `iptables-save` sees them, while
  everything else keeps the host's network and reaches the package mirror.
The state folder (`state_folder(root)`) is made and removed by hotsauce
(hotsauce.modules.chroot.build_chroot). Without it (this plugin used alone),
commands still get the namespaces, but /proc/sys stays read-only and the
capabilities for mounts, swap, host names and networking are dropped too, so
those commands fail with their own error instead of acting on the host.
Without bwrap at all, the plugin falls back to plain chroot with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import struct
import subprocess
import typing as t

DOCUMENTATION = """
    name: hotsauce_chroot
    short_description: run tasks inside an image root, in a bubblewrap sandbox
    description:
        - Runs every command inside the image root, in namespaces of its own (bwrap), so it
          cannot change the build host; files are copied in and out through the sandbox.
        - Without bwrap, it falls back to chroot(8) with a warning.
    author: hotsauce
    options:
        remote_addr:
            description: the image root folder on the build host
            default: inventory_hostname
            type: str
            vars:
                - name: inventory_hostname
                - name: ansible_host
        warm_python:
            description:
                - Run pipelined modules in a fork of the run's warm Python, which hotsauce starts in
                  the image, while the sandbox a task gets has not changed; false gives every module
                  a fresh Python in a sandbox of its own.
            default: true
            type: bool
            vars:
                - name: hotsauce_warm_python
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


# --- the sandbox ---------------------------------------------------------------

BWRAP = "bwrap"
# Where each build's sandbox state lives on the host: a private copy of /proc/sys, the
# held network namespace and the stub. Found from the root's path alone, so that every
# caller (this plugin in ansible-playbook, hotsauce, a debugging shell) shares it.
STATE_PARENT = "/run/hotsauce-sandbox"
STATE_SYSCTL = "sys"  # the private copy of /proc/sys
STATE_NETNS = "net"  # a bind mount of the build's private network namespace
STATE_STUB = "absorb"  # the stub bound over programs that would act on the host
STATE_PROGRAMS = "programs.json"  # which programs of the image the stub covers (a cache)
# Inside the sandbox (its own tmpfs /run): the network namespace, the real programs
# behind the stubs (by every name they are called by), and their files.
SANDBOX_DIR = "/run/hotsauce"
SANDBOX_NETNS = f"{SANDBOX_DIR}/net"
SANDBOX_REAL = f"{SANDBOX_DIR}/real"
# The warm Python of a run (hotsauce.modules.warm_python, started by hotsauce.modules.module_server):
# its folder in the state folder, bound at SANDBOX_SERVER in its sandbox, holds its socket and
# what it was started with (WARM_KEY); the plugin sends it pipelined module payloads.
STATE_SERVER = "server"
SANDBOX_SERVER = f"{SANDBOX_DIR}/server"
WARM_SOCKET = "socket"
WARM_KEY = "key.json"
FRAME_LENGTH = struct.Struct(">I")

# Never needed to build an image, and each reaches the host's kernel or hardware state.
DROPPED_CAPABILITIES = (
    "CAP_SYS_MODULE", "CAP_SYS_TIME", "CAP_SYS_BOOT", "CAP_SYS_RAWIO", "CAP_SYS_PACCT",
    "CAP_SYS_TTY_CONFIG", "CAP_SYS_PTRACE", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
    "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_AUDIT_CONTROL", "CAP_AUDIT_READ", "CAP_SYSLOG",
    "CAP_DAC_READ_SEARCH", "CAP_BPF", "CAP_PERFMON", "CAP_CHECKPOINT_RESTORE",
)
# Kept only while the build's state absorbs what they allow: sethostname in the UTS
# namespace and nsenter into the private network namespace (CAP_SYS_ADMIN), rules and
# links there (CAP_NET_ADMIN). Without the state, dropping them keeps swap, mounts,
# firewall and links of the host out of reach.
STATEFUL_CAPABILITIES = ("CAP_SYS_ADMIN", "CAP_NET_ADMIN")

# Programs that would change the running host: absorbed (succeed without acting) ...
ABSORBED_PROGRAMS = ("swapon", "swapoff", "modprobe", "insmod", "rmmod", "udevadm")
# ... or run in the build's private network namespace.
NETWORK_PROGRAMS = (
    "iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save",
    "ip6tables-restore", "iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore",
    "ip6tables-legacy", "ip6tables-legacy-save", "ip6tables-legacy-restore", "iptables-nft",
    "iptables-nft-save", "iptables-nft-restore", "ip6tables-nft", "ip6tables-nft-save",
    "ip6tables-nft-restore", "ebtables", "arptables", "xtables-nft-multi", "xtables-legacy-multi",
    "nft", "ip", "tc", "bridge", "ethtool",
)
# Other names of the multi-call programs above (kmod): they reach the real program.
ALSO_NAMES = ("kmod", "lsmod", "depmod", "modinfo")
PROGRAM_FOLDERS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin")

# One stub for all of them; it tells them apart by the name it was called by.
STUB = f"""#!/bin/sh
# hotsauce sandbox: this program would change the build host; here it is absorbed
name=${{0##*/}}
real={SANDBOX_REAL}/$name
run_real() {{
  [ -e "$real" ] || {{ echo "$name: not available in the hotsauce sandbox" >&2; exit 127; }}
  exec "$real" "$@"
}}
case $name in
  swapon|swapoff)
    case "$*" in ""|-s|--show*|--summary|-h|--help|-V|--version) run_real "$@" ;; esac
    exit 0 ;;
  modprobe|insmod|rmmod)
    for arg in "$@"; do
      case $arg in -c|--showconfig|-n|--dry-run|-D|--show-depends|-R|--resolve-alias|-h|--help|-V|--version)
        run_real "$@" ;;
      esac
    done
    exit 0 ;;
  udevadm)
    case $1 in trigger|settle|control) exit 0 ;; esac
    run_real "$@" ;;
  kmod|lsmod|depmod|modinfo) run_real "$@" ;;
esac
# Firewall and link programs: the build's private network namespace, never the host's.
if [ -e {SANDBOX_NETNS} ] && command -v nsenter >/dev/null 2>&1; then
  [ -e "$real" ] || run_real "$@"
  exec nsenter --net={SANDBOX_NETNS} "$real" "$@"
fi
exit 0
"""


def state_folder(root: str) -> str:
    """The host folder holding the sandbox state of the build of `root`."""
    key = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:16]
    return os.path.join(STATE_PARENT, key)


def bwrap_available() -> bool:
    return shutil.which(BWRAP) is not None


def sandbox_argv(root: str, argv: t.Sequence[str], *, hostname: str | None = None,
                 options: t.Sequence[str] = ()) -> list[str]:
    """The argument list that runs `argv` inside the image `root`, sandboxed; plain chroot
    when bwrap is not installed (the caller warns). `hostname` defaults to the image's own;
    `options` are more bwrap options (hotsauce.modules.module_server binds its folder).

    The sandbox's processes see the root as `/`, so what looks for processes inside the root
    by their paths does not find them: hotsauce finds them by bwrap's `--bind ROOT /`
    (hotsauce.modules.sandbox.stop_sandboxes), and with --die-with-parent and a PID
    namespace, stopping bwrap stops every process of the sandbox."""
    root = os.path.realpath(root)
    if not bwrap_available():
        return ["chroot", root, *argv]
    state = state_folder(root)
    stateful = os.path.isdir(state)
    command = [BWRAP, "--die-with-parent", "--unshare-pid", "--unshare-uts",
               "--unshare-ipc", "--hostname", hostname or image_hostname(root),
               "--bind", root, "/", "--proc", "/proc", "--dev", "/dev", "--ro-bind", "/sys", "/sys",
               # The build's own tmpfs /run (hotsauce.modules.chroot: what "started" services
               # prepared there) when it has one, else a fresh one; the sandbox's folder is its own.
               *([] if os.path.ismount(os.path.join(root, "run")) else ["--tmpfs", "/run"]),
               "--tmpfs", SANDBOX_DIR, "--dir", SANDBOX_REAL, "--chdir", "/"]
    dropped = DROPPED_CAPABILITIES if stateful else DROPPED_CAPABILITIES + STATEFUL_CAPABILITIES
    for capability in dropped:
        command += ["--cap-drop", capability]
    if shutil.which("setpriv"):
        # bwrap, run as root, drops capabilities from what its command has but not from the
        # bounding set, so a program with file capabilities would get them back: setpriv
        # takes them out of the bounding set before bwrap starts (bwrap needs none of them).
        bounding = ",".join("-" + name.removeprefix("CAP_").lower() for name in DROPPED_CAPABILITIES)
        command = ["setpriv", "--bounding-set", bounding, *command]
    if stateful:
        command += ["--bind", os.path.join(state, STATE_SYSCTL), "/proc/sys"]
        if os.path.exists(os.path.join(state, STATE_NETNS)):
            command += ["--ro-bind", os.path.join(state, STATE_NETNS), SANDBOX_NETNS]
        command += stub_binds(root, state)
    return [*command, *options, "--", *argv]


def image_hostname(root: str) -> str:
    """The image's /etc/hostname (set before modules run), so `hostname` in the sandbox
    agrees with the image; `localhost` when it has none."""
    try:
        with open(os.path.join(root, "etc", "hostname"), encoding="utf-8", errors="replace") as file:
            name = file.readline().strip()
    except OSError:
        return "localhost"
    return name if name and len(name) <= 64 and "/" not in name else "localhost"


def stub_binds(root: str, state: str) -> list[str]:
    """bwrap options putting the stub over each program of the image that would act on the
    host (found anew for every command: a role may just have installed nftables), and the
    real program, under every name it was called by, in SANDBOX_REAL."""
    names_by_file = programs_to_stub(root, state)
    stub = os.path.join(state, STATE_STUB)
    options: list[str] = []
    covered = {real: names for real, names in names_by_file.items()
               if not all(name in ALSO_NAMES for name in names)}  # kmod only as lsmod: nothing to absorb
    # The real programs stay reachable through a bind of their folder (one mount per folder,
    # not per program: every mount is paid again by every command).
    kept = {folder: f"{SANDBOX_REAL}/.{number}"
            for number, folder in enumerate(sorted({os.path.dirname(real) for real in covered}))}
    for folder, place in kept.items():
        options += ["--bind", root + folder, place]
    linked: set[str] = set()  # a name found in two folders: the first, as PATH finds it
    for real, names in sorted(covered.items()):
        target = f"{kept[os.path.dirname(real)]}/{os.path.basename(real)}"
        for name in sorted({*names, os.path.basename(real)} - linked):
            options += ["--symlink", target, f"{SANDBOX_REAL}/{name}"]
            linked.add(name)
        options += ["--ro-bind", stub, real]
    return options


def programs_to_stub(root: str, state: str) -> dict[str, list[str]]:
    """Each program file of the image to cover with the stub -> the names it is called by.

    Finding them costs some 40 symlink resolutions; the answer is kept in the state folder
    until a program folder or /etc/alternatives changes (dpkg and update-alternatives
    rename entries into place, which changes their folder's mtime)."""
    folders = sorted(filter(None, dict.fromkeys(resolve_in_root(root, f) for f in PROGRAM_FOLDERS)))
    key = []
    for folder in [*folders, "/etc/alternatives"]:
        try:
            key.append(f"{folder}:{os.stat(root + folder).st_mtime_ns}")
        except OSError:
            key.append(f"{folder}:-")
    cache = os.path.join(state, STATE_PROGRAMS)
    try:
        with open(cache, encoding="utf-8") as file:
            cached = json.load(file)
        if cached["key"] == key:
            return t.cast(dict[str, list[str]], cached["programs"])
    except (OSError, ValueError, KeyError):
        pass
    programs = find_programs_to_stub(root, folders)
    # Written aside and renamed: parallel tasks never read half a file.
    partial = f"{cache}.{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as file:
        json.dump({"key": key, "programs": programs}, file)
    os.replace(partial, cache)
    return programs


def find_programs_to_stub(root: str, folders: list[str]) -> dict[str, list[str]]:
    wanted = {*ABSORBED_PROGRAMS, *NETWORK_PROGRAMS, *ALSO_NAMES}
    names_by_file: dict[str, list[str]] = {}
    for folder in folders:
        try:
            present = wanted.intersection(os.listdir(root + folder))
        except OSError:
            continue
        for name in sorted(present):
            path = f"{folder}/{name}"
            real = resolve_in_root(root, path) if os.path.islink(root + path) else path
            if real is not None and os.path.isfile(root + real):
                names = names_by_file.setdefault(real, [])
                if name not in names:
                    names.append(name)
    return names_by_file


def resolve_in_root(root: str, path: str, hops: int = 40) -> str | None:
    """`path` inside the image with every symlink resolved as the image sees it (absolute
    links start again at the image's /); None when it does not exist or loops."""
    done: list[str] = []
    todo = [part for part in path.split("/") if part not in ("", ".")]
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(root, *done, part)
        if os.path.islink(host):
            hops -= 1
            if hops < 0:
                return None
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        if not os.path.lexists(host):
            return None
        done.append(part)
    return "/" + "/".join(done)


# --- the warm Python -------------------------------------------------------------


def warm_key(root: str, state: str, python: str) -> dict[str, t.Any]:
    """What a sandbox started now would differ in from one started earlier: the programs the
    stub covers, the interpreter's file, the host name. The warm Python serves only while its
    key is the current one: a role that installs nftables, or upgrades python3, gets fresh
    sandboxes from then on."""
    real = resolve_in_root(root, python)
    try:
        stat = os.stat(root + real) if real else None
    except OSError:
        stat = None
    # By the file, not the name: Ansible discovers /usr/bin/python3.11 where hotsauce started
    # /usr/bin/python3, the same program.
    return {
        "python_file": [real, stat.st_ino, stat.st_size, stat.st_mtime_ns] if stat else None,
        "programs": programs_to_stub(root, state),
        "hostname": image_hostname(root),
    }


def pipelined_python(cmd: str) -> tuple[str, dict[str, str]] | None:
    """(interpreter, environment) of Ansible's command for a pipelined module,
    `/bin/sh -c 'NAME=VALUE... /usr/bin/python3 && sleep 0'`; None for any other command
    (become, a raw command, a file's transfer), and for one the shell would read differently
    from this parse: only what reads back to the same text passes."""
    try:
        outer = shlex.split(cmd)
    except ValueError:
        return None
    if len(outer) != 3 or outer[:2] != ["/bin/sh", "-c"]:
        return None
    try:
        words = shlex.split(outer[2])
    except ValueError:
        return None
    if words[-3:] == ["&&", "sleep", "0"]:
        words = words[:-3]
    if not words or not words[-1].startswith("/"):
        return None
    interpreter, environment = words[-1], {}
    for word in words[:-1]:
        name, equals, value = word.partition("=")
        if not equals or not name.isidentifier() or not name.isascii():
            return None
        environment[name] = value
    spoken = " ".join([*(f"{name}={shlex.quote(value)}" for name, value in environment.items()),
                       shlex.quote(interpreter)])
    if outer[2] not in (spoken, f"{spoken} && sleep 0"):
        return None
    return interpreter, environment


def warm_reply(root: str, cmd: str, in_data: bytes, environment: dict[str, str]) -> tuple[int, bytes, bytes] | None:
    """The warm Python's answer to a pipelined module command; None when there is none to ask
    (not started, gone, stale, another interpreter) and the command runs in a sandbox of its own."""
    state = state_folder(root)
    folder = os.path.join(state, STATE_SERVER)
    parsed = pipelined_python(cmd)
    if parsed is None:
        return None
    interpreter, assignments = parsed
    try:
        with open(os.path.join(folder, WARM_KEY), encoding="utf-8") as file:
            started_with = json.load(file)
    except (OSError, ValueError):
        return None
    if started_with != warm_key(root, state, interpreter):
        return None
    request = json.dumps({"env": {**environment, **assignments}, "cwd": "/", "interpreter": interpreter}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.connect(os.path.join(folder, WARM_SOCKET))
            client.sendall(b"".join(FRAME_LENGTH.pack(len(part)) + part for part in (request, in_data)))
        except OSError:
            return None  # nothing ran: the command runs in a sandbox of its own
        try:
            header = json.loads(read_frame(client))
            stdout, stderr = read_frame(client), read_frame(client)
        except (OSError, EOFError, ValueError) as error:
            from ansible.errors import AnsibleConnectionFailure

            # The module may have run, or be running: never run it a second time.
            raise AnsibleConnectionFailure(f"the warm Python in {root} stopped answering: {error}") from error
    return int(header["rc"]), stdout, stderr


def read_frame(client: socket.socket) -> bytes:
    (size,) = FRAME_LENGTH.unpack(read_exactly(client, FRAME_LENGTH.size))
    return read_exactly(client, size)


def read_exactly(client: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = client.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("the warm Python went away")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def __getattr__(name: str) -> type:
    """`Connection`, the plugin's class, made on first use: ansible-core's plugin loader takes it
    from this module by name, while hotsauce imports this module for the sandbox alone, and so
    does not import ansible-core (0.3 s) for it."""
    if name != "Connection":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    connection = _connection_class()
    globals()["Connection"] = connection
    return connection


def _connection_class() -> type:
    from ansible.errors import AnsibleConnectionFailure, AnsibleError
    from ansible.plugins.connection import ConnectionBase
    from ansible.utils.display import Display

    class Connection(ConnectionBase):  # type: ignore[misc]  # ansible ships no type stubs
        """Commands and files inside an image root."""

        transport = "hotsauce_chroot"
        has_pipelining = True
        default_user = "root"
        warned = False  # the plain-chroot warning, once per ansible-playbook

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
            # group, these children go with it (and bwrap's sandbox with them).
            if not bwrap_available() and not Connection.warned:
                Display().warning("bwrap is not installed: tasks run in a plain chroot, "
                                  "which does not keep them from changing the build host")
                Connection.warned = True
            return subprocess.Popen(
                sandbox_argv(self.root, command), env=image_environment(), cwd="/", **popen
            )

        def exec_command(
            self, cmd: str, in_data: bytes | None = None, sudoable: bool = True
        ) -> tuple[int, bytes, bytes]:
            super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
            if in_data is not None and bwrap_available() and self.get_option("warm_python"):
                reply = warm_reply(self.root, cmd, in_data, image_environment())
                if reply is not None:
                    return reply
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


    Connection.__qualname__ = "Connection"  # what pickle and ansible-core's messages look it up by
    return Connection
