"""The warm Python of an Ansible run: runs inside the image, in the build's sandbox, and runs
each pipelined module payload (AnsiballZ) in a fork of itself.

A fresh interpreter per task pays, on a small build host, some 0.02 s to start and 0.13 s to
compile and import ansible's module_utils out of the payload's zip; the facts module, 0.5 s
more. This process imports them once, while ansible-playbook starts, from the library: the
controller's module_utils as payloads carry them (hotsauce.modules.module_server writes it).
It imports them in layers (basic, then what the facts module imports), and forks per task.

Standard library only, for the image's own python3 (3.8 or later; an older one never listens,
and every task runs as before). hotsauce starts it and the connection plugin is its only
client. A request on the Unix socket is a JSON header (the command's environment, working
folder and interpreter) and the payload script; the answer is a JSON header (the exit status),
the command's stdout and its stderr. Each part is framed by a 4-byte big-endian length.

What keeps a forked run equal to a fresh interpreter's:
- a payload runs with the first layers whose every file its zip holds byte for byte (by
  CRC-32) and with the other layers forgotten, so another ansible-core's payload, or one with a
  role's own copy of a module_util, imports its own;
- the packages it keeps look for further modules in the payload's zip, not in the library;
- the child gets the command's environment, working folder, stdin at end of file, stdout and
  stderr of its own (memory files, read after it exits), `sys.argv` and `__main__` as
  `python3 < script` has them, and it exits as the interpreter's shutdown would for what it
  added (`leave`);
- it runs in a process group of its own, killed when it ends, as a sandbox ends with its
  command, and a client that goes away (a task's timeout, a cancelled run) takes it with it.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import gc
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

# A payload's zip is the only long base64 literal in its script.
ZIP_LITERAL = re.compile(rb"""(['"]{1,3})([A-Za-z0-9+/=\s]{2000,})\1""")
LENGTH = struct.Struct(">I")


class Warm:
    """What this process imported from the library (the controller's module_utils, as payloads
    carry them), in layers: each imported after the ones before, so that a payload may keep the
    first layers and forget the others (nothing imported earlier refers to what came later)."""

    def __init__(self, library: str) -> None:
        self.library = library
        self.crcs: dict[str, int] = {}  # the library's files by name -> CRC-32
        self.layers: list[list[str]] = []  # the modules each layer imported

    def warm_up(self, layers: list[list[str]]) -> None:
        with zipfile.ZipFile(self.library) as archive:
            self.crcs = {info.filename: info.CRC for info in archive.infolist()}
        sys.path.insert(0, self.library)
        try:
            for names in layers:
                before = set(sys.modules)
                try:
                    for name in names:
                        with contextlib.suppress(ImportError):  # another ansible-core's names
                            __import__(name)
                finally:
                    self.layers.append(sorted(name for name in set(sys.modules) - before
                                              if self.inside(sys.modules[name]) is not None))
        finally:
            sys.path.remove(self.library)

    def inside(self, module: types.ModuleType) -> str | None:
        """The module's file name inside the library, None for a module from elsewhere."""
        file = getattr(module, "__file__", None) or ""
        return file[len(self.library) + 1:] if file.startswith(self.library + "/") else None

    def layers_fitting(self, crcs: dict[str, int]) -> int:
        """How many layers, from the first, the payload's zip holds byte for byte."""
        for count, modules in enumerate(self.layers):
            for name in modules:
                inside = self.inside(sys.modules[name])
                if inside is None or crcs.get(inside) != self.crcs.get(inside):
                    return count
        return len(self.layers)

    def keep(self, count: int, payload_zip: str) -> None:
        """Keep the first `count` layers, looking for modules not imported yet in the payload's
        zip (its module, its own module_utils) as a fresh interpreter would; forget the rest."""
        for modules in self.layers[count:]:
            for name in modules:
                forget(name)
        for modules in self.layers[:count]:
            for name in modules:
                module = sys.modules[name]
                if hasattr(module, "__path__"):  # a package; extend_path may have added folders
                    module.__path__ = [payload_zip + entry[len(self.library):]
                                       if entry.startswith(self.library + "/") else entry
                                       for entry in module.__path__]


def forget(name: str) -> None:
    """Out of sys.modules and off its package: `from package import name` reads the attribute first."""
    module = sys.modules.pop(name, None)
    parent_name, _, child = name.rpartition(".")
    parent = sys.modules.get(parent_name)
    if module is not None and parent is not None and getattr(parent, child, None) is module:
        delattr(parent, child)


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
    kept = warm.layers_fitting(crcs_of(payload)) if payload is not None else 0
    payload_zip = f"{warm.library[:-len('.zip')]}.{os.getpid()}.zip"
    stdout = os.memfd_create("stdout")
    stderr = os.memfd_create("stderr")
    if payload is not None and kept:  # where the kept packages look for what they did not import
        with open(payload_zip, "wb") as file:
            file.write(payload)
    pid = os.fork()
    if pid == 0:
        connection.close()
        return run_script(script, request, warm, kept, payload_zip, stdout, stderr)
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


def run_script(script: bytes, request: dict[str, typing.Any], warm: Warm, kept: int,
               payload_zip: str, stdout: int, stderr: int) -> typing.NoReturn:
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
    warm.keep(kept, payload_zip)
    sys.argv = [""]  # sys.path[0] is "" already: this process runs as `python3 -c`
    sys.executable = request.get("interpreter") or sys.executable
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    warm_modules = set(sys.modules) - {"__main__"}
    try:
        exec(compile(script, "<stdin>", "exec"), main.__dict__)
        status = 0
    except SystemExit as exiting:
        status = exit_status(exiting.code)
    except BaseException as error:
        sys.excepthook(type(error), error, error.__traceback__)
        status = 130 if isinstance(error, KeyboardInterrupt) else 1
    del main  # sys.modules holds it alone now, as the interpreter's own __main__ at its exit
    leave(status, warm_modules)


def exit_status(code: object) -> int:
    """What the interpreter exits with for `sys.exit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def leave(status: int, warm_modules: set[str]) -> typing.NoReturn:
    """Exit as the interpreter's shutdown would, for what the module added: its threads waited
    for, the atexit functions run, its own modules and __main__ released (the finalizers of
    what only they held run), the streams flushed. The modules imported before the fork are
    left as they are: tearing them down made a module's exit take 30-40 ms, and `gc.freeze`
    in the server keeps them out of this process's collection."""
    threading = sys.modules.get("threading")
    if threading is not None and hasattr(threading, "_shutdown"):
        threading._shutdown()
    atexit._run_exitfuncs()
    for name in [name for name in sys.modules if name not in warm_modules]:
        del sys.modules[name]
    gc.collect()  # what only they held, cycles too, each finalizer run before its cycle is broken
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def reopened(fd: int, mode: str, like: typing.TextIO | None) -> typing.TextIO:
    encoding = getattr(like, "encoding", None) or "utf-8"
    errors = getattr(like, "errors", None) or "strict"
    return typing.cast(typing.TextIO, open(fd, mode, encoding=encoding, errors=errors, closefd=False))


# --- the server ---------------------------------------------------------------


def serve(socket_path: str, library: str, layers: list[list[str]]) -> int:
    if not hasattr(os, "memfd_create"):  # Python 3.7: never listening, so every task runs as before
        return 1
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(8)
    # Stopped by its sandbox (bwrap); a child still running ends with the sandbox.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # After the bind: clients queue while this runs, beside ansible-playbook's own start.
    warm = Warm(library)
    try:
        warm.warm_up(layers)
    except Exception:  # whatever went wrong, every payload imports for itself
        warm.keep(0, library)
        warm.layers = []
    gc.freeze()  # what is imported now is never collected: a module's collection skips it
    while True:
        reap()
        connection, _ = listener.accept()
        try:
            request = json.loads(read_frame(connection).decode())
            script = read_frame(connection)
        except (EOFError, ValueError, OSError):
            connection.close()
            continue
        pid = os.fork()
        if pid == 0:
            listener.close()
            return serve_one(connection, warm, request, script)
        connection.close()


def reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
