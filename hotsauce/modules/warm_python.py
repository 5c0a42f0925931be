"""The warm Python of an Ansible run: runs inside the image, in the build's sandbox, and runs
each pipelined module payload (AnsiballZ) in a fork of itself.

A fresh interpreter per task pays, on a small build host, some 0.02 s to start and 0.13 s to
compile and import ansible's module_utils out of the payload's zip. This process imports them
once, from the first payload, and forks per task, so a task's module finds them imported.

Standard library only, for the image's own python3 (3.7 or later); hotsauce starts it
(hotsauce.modules.module_server) and the connection plugin is its only client. A request on
the Unix socket is one frame: a JSON header (the environment and working folder of the
command) and the payload script; the answer is a JSON header (the exit status) and the
command's stdout and stderr. Each frame is a 4-byte big-endian length and that many bytes.

What keeps a forked run equal to a fresh interpreter's:
- a payload whose zip holds every file this process imported, byte for byte (by CRC-32), runs
  with them; any other (another ansible-core, a role's own copy of a module_util) runs with
  them all forgotten first, so it imports its own;
- the packages imported here look for further modules in the payload's zip, not in the first
  one's, through their `__path__`;
- the child gets the command's environment, working folder, stdin at end of file, stdout and
  stderr of its own (memory files, read after it exits), `sys.argv` and `__main__` as
  `python3 < script` has them, and exits through the interpreter's own shutdown (atexit).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import os
import re
import select
import signal
import socket
import struct
import sys
import types
import typing
import zipfile

# The module_utils a payload starts with: ansible-core 2.19's loader, or basic before it.
WARM_IMPORTS = ("ansible.module_utils._internal._ansiballz._loader", "ansible.module_utils.basic")
# A payload's zip is the only long base64 literal in its script.
ZIP_LITERAL = re.compile(rb"""(['"]{1,3})([A-Za-z0-9+/=\s]{2000,})\1""")
LENGTH = struct.Struct(">I")


class Warm:
    """What this process imported, and from which zip."""

    def __init__(self, library: str) -> None:
        self.library = library  # the first payload's zip, kept for the run
        self.crcs: dict[str, int] = {}  # its files by name -> CRC-32
        self.modules: list[str] = []  # what was imported out of it

    def warm_up(self, zip_bytes: bytes) -> None:
        with open(self.library, "wb") as file:
            file.write(zip_bytes)
        self.crcs = crcs_of(zip_bytes)
        before = set(sys.modules)
        sys.path.insert(0, self.library)
        try:
            for name in WARM_IMPORTS:
                try:
                    __import__(name)
                    break
                except ImportError:
                    continue
        finally:
            sys.path.remove(self.library)
            self.modules = sorted(name for name in set(sys.modules) - before
                                  if module_file(sys.modules[name]).startswith(self.library + "/"))

    def fits(self, crcs: dict[str, int]) -> bool:
        """True when the payload's zip holds every imported file with the same bytes."""
        for name in self.modules:
            inside = module_file(sys.modules[name])[len(self.library) + 1:]
            if crcs.get(inside) != self.crcs.get(inside):
                return False
        return bool(self.modules)

    def forget(self) -> None:
        for name in self.modules:
            sys.modules.pop(name, None)

    def point_packages_at(self, payload_zip: str) -> None:
        """Submodules not imported yet come from the payload's zip (its modules, its own
        module_utils), as a fresh interpreter would find them."""
        for name in self.modules:
            module = sys.modules[name]
            if hasattr(module, "__path__"):
                inside = os.path.dirname(module_file(module)[len(self.library) + 1:])
                module.__path__ = [payload_zip + "/" + inside]


def module_file(module: types.ModuleType) -> str:
    return getattr(module, "__file__", None) or ""


def crcs_of(zip_bytes: bytes) -> dict[str, int]:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        return {info.filename: info.CRC for info in archive.infolist()}


def zip_in(script: bytes) -> bytes | None:
    match = ZIP_LITERAL.search(script)
    if match is None:
        return None
    try:
        data = base64.b64decode(b"".join(match.group(2).split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data[:4] == b"PK\x03\x04" else None


# --- frames ------------------------------------------------------------------


def read_exactly(connection: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = connection.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("the client went away")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(connection: socket.socket) -> bytes:
    (size,) = LENGTH.unpack(read_exactly(connection, LENGTH.size))
    return read_exactly(connection, size)


def frame(data: bytes) -> bytes:
    return LENGTH.pack(len(data)) + data


# --- one request --------------------------------------------------------------


def serve_one(connection: socket.socket, warm: Warm, request: dict[str, typing.Any], script: bytes) -> int:
    """In the forked child that answers the client: run the script in a further fork (its
    exit status is then the kernel's, whatever the module does), answer, exit."""
    payload = zip_in(script)
    payload_zip = f"{warm.library[:-len('.zip')]}.{os.getpid()}.zip"
    stdout = os.memfd_create("stdout")
    stderr = os.memfd_create("stderr")
    if payload is not None and warm.modules:
        with open(payload_zip, "wb") as file:
            file.write(payload)
    pid = os.fork()
    if pid == 0:
        connection.close()
        return run_script(script, request, warm, payload, payload_zip, stdout, stderr)
    try:
        status = wait_for(pid, connection)
    finally:
        if os.path.exists(payload_zip):
            os.unlink(payload_zip)
    code = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8
    header = json.dumps({"rc": code}).encode()
    connection.sendall(frame(header) + frame(contents(stdout)) + frame(contents(stderr)))
    return 0


def wait_for(pid: int, connection: socket.socket) -> int:
    """The module process's wait status, once it and what it left in its process group are gone,
    as a sandbox of its own ends with its command. A client that goes away (its task timed out,
    the run was cancelled) takes the module with it, as a sandbox dies with its parent."""
    if hasattr(os, "pidfd_open"):
        pidfd = os.pidfd_open(pid)
        try:
            readable, _, _ = select.select([pidfd, connection.fileno()], [], [])
        finally:
            os.close(pidfd)
        if pidfd not in readable:
            stop_group(pid)
    # Still a zombie here, so its pid, the group's id, cannot be anyone else's yet.
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    stop_group(pid)
    return os.waitpid(pid, 0)[1]


def stop_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def contents(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    with os.fdopen(fd, "rb") as file:
        return file.read()


def run_script(script: bytes, request: dict[str, typing.Any], warm: Warm, payload: bytes | None,
               payload_zip: str, stdout: int, stderr: int) -> int:
    """The module's process: as `python3 < script` would run it, from here on, in a process group
    of its own (what it leaves running there is stopped when it ends)."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    for fd in (null, stdout, stderr):
        os.close(fd)
    # Encodings as this interpreter chose them for its own streams, as a fresh one would.
    sys.stdin = reopened(0, "r", sys.__stdin__)
    sys.stdout = reopened(1, "w", sys.__stdout__)
    sys.stderr = reopened(2, "w", sys.__stderr__)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request.get("cwd") or "/")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if warm.modules and payload is not None and warm.fits(crcs_of(payload)):
        warm.point_packages_at(payload_zip)
    else:
        warm.forget()
    sys.argv = [""]  # sys.path[0] is "" already: this process runs as `python3 -c`
    sys.executable = request.get("interpreter") or sys.executable
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    exec(compile(script, "<stdin>", "exec"), main.__dict__)
    return 0


def reopened(fd: int, mode: str, like: typing.TextIO | None) -> typing.TextIO:
    encoding = getattr(like, "encoding", None) or "utf-8"
    errors = getattr(like, "errors", None) or "strict"
    return typing.cast(typing.TextIO, open(fd, mode, encoding=encoding, errors=errors, closefd=False))


# --- the server ---------------------------------------------------------------


def serve(socket_path: str, library: str) -> int:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(8)
    warm = Warm(library)
    # Stopped by its sandbox (bwrap); a child still running ends with the sandbox.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        reap()
        connection, _ = listener.accept()
        try:
            request = json.loads(read_frame(connection).decode())
            script = read_frame(connection)
        except (EOFError, ValueError, OSError):
            connection.close()
            continue
        if not warm.crcs:
            warm_up_from(warm, script)
        pid = os.fork()
        if pid == 0:
            listener.close()
            return serve_one(connection, warm, request, script)
        connection.close()


def warm_up_from(warm: Warm, script: bytes) -> None:
    """Import the module_utils out of the first payload that has a zip; once: a payload whose
    imports fail here runs as it would anyway, and later ones run cold."""
    zip_bytes = zip_in(script)
    if zip_bytes is None:
        return
    try:
        warm.warm_up(zip_bytes)
    except Exception:  # whatever went wrong, the children import for themselves
        warm.forget()
        warm.modules = []
        warm.crcs = {"": 0}


def reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], sys.argv[2]))
