"""What ansible-core learns about module sources while building payloads, kept between runs.

Before a Python module runs, ansible-core builds its payload on the controller: it compiles the
module and every module_util it imports to a syntax tree and walks each tree for its imports. It
keeps the payload only for the rest of its own process, so every ansible-playbook pays again: in
the reference build 0.1 to 0.5 s for each module's first task (user 0.49 s, setup 0.32 s).

The imports found in one source file are a function of nothing but its bytes, its dotted name,
whether it is a package's __init__, and the Python and ansible-core versions. This callback, loaded
in the controller's process before its workers fork, keeps them in a folder under a hash of all of
those, and ansible-core's walk takes them from there instead of compiling the file again. The rest
of the build of a payload is left as it is: finding each module_util on this controller, reading it
and zipping it. So a changed file, a role's own module_utils or a collection installed since gives
the same payload as without the memo; what the memo skips is only the work whose result it holds.

hotsauce enables it with the folder in HOTSAUCE_PAYLOAD_MEMO. An ansible-core whose payload builder
no longer has the two functions this wraps runs without it. The memo is a shortcut and never a
reason to fail: an entry that cannot be read or written is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import typing as t

from ansible import __version__ as ansible_version
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: hotsauce_payload_memo
type: aggregate
short_description: keeps the imports ansible-core finds in module sources between runs
description:
  - Payloads of Python modules are built faster in later runs. The imports found by the
    syntax-tree walk over each module and module_util source are kept in a folder, keyed by the
    source's bytes, and taken from there.
requirements:
  - enabled in callbacks_enabled
options:
  folder:
    description: The folder that holds the memo; without one, nothing is kept.
    env:
      - name: HOTSAUCE_PAYLOAD_MEMO
    type: path
"""

MEMO_FORMAT = 1


class _SourceTree:
    """Stands where ansible-core's compiled syntax tree would: compiles only when something reads
    the tree itself, which the walk does not when its result is in the memo."""

    def __init__(self, compile_tree: t.Callable[[str, t.Any], t.Any], name: str, source: str | bytes) -> None:
        self._compile_tree, self._name, self._source = compile_tree, name, source
        self._tree: t.Any = None
        encoded = source if isinstance(source, bytes) else source.encode("utf-8", "surrogateescape")
        self.digest = hashlib.sha256(encoded).hexdigest()

    @property
    def tree(self) -> t.Any:
        if self._tree is None:
            self._tree = self._compile_tree(self._name, self._source)
        return self._tree

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self.tree, name)


class _Memo:
    def __init__(self, folder: str) -> None:
        self.folder = folder

    def path_for(self, module_fqn: str, is_package: bool, digest: str) -> str:
        identity = [MEMO_FORMAT, list(sys.version_info[:2]), ansible_version, module_fqn, bool(is_package), digest]
        return os.path.join(self.folder, hashlib.sha256(json.dumps(identity).encode()).hexdigest())

    def read(self, path: str) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]] | None:
        try:
            with open(path, encoding="utf-8") as entry:
                submodules, optional = json.load(entry)
            return {tuple(name) for name in submodules}, {tuple(name) for name in optional}
        except (OSError, ValueError, TypeError):
            return None

    def write(self, path: str, submodules: set[tuple[str, ...]], optional: set[tuple[str, ...]]) -> None:
        # Whole or not at all: written aside, then renamed over, as workers may write the same entry.
        try:
            os.makedirs(self.folder, exist_ok=True)
            handle, partial = tempfile.mkstemp(dir=self.folder, prefix=".partial-")
            with os.fdopen(handle, "w", encoding="utf-8") as entry:
                json.dump([sorted(submodules), sorted(optional)], entry)
            os.replace(partial, path)
        except OSError:
            pass


def install(folder: str) -> bool:
    """Wrap ansible-core's payload walk with the memo in `folder`; False when this ansible-core's
    builder is not the one the wrapping was written for."""
    try:
        from ansible.executor import module_common
    except ImportError:
        return False
    compile_tree = getattr(module_common, "_compile_module_ast", None)
    finder = getattr(module_common, "ModuleDepFinder", None)
    walk = getattr(finder, "visit", None)
    if finder is None or compile_tree is None or walk is None or getattr(compile_tree, "hotsauce_memo", False):
        return False
    memo = _Memo(folder)

    def compile_lazily(module_name: str, source_code: str | bytes) -> t.Any:
        return _SourceTree(compile_tree, module_name, source_code)

    def remembered_walk(self: t.Any, tree: t.Any) -> t.Any:
        if not isinstance(tree, _SourceTree):
            return walk(self, tree)
        path = memo.path_for(self.module_fqn, self.is_pkg_init, tree.digest)
        if (known := memo.read(path)) is not None:
            self.submodules.update(known[0])
            self.optional_imports.update(known[1])
            return None
        self._tree = tree.tree  # the walk compares each import's parent with the tree itself
        walk(self, tree.tree)
        memo.write(path, self.submodules, self.optional_imports)
        return None

    compile_lazily.hotsauce_memo = True  # type: ignore[attr-defined]
    module_common._compile_module_ast = compile_lazily
    finder.visit = remembered_walk
    return True


class CallbackModule(CallbackBase):  # type: ignore[misc]  # ansible ships no type stubs
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "hotsauce_payload_memo"
    CALLBACK_NEEDS_ENABLED = True

    def set_options(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().set_options(*args, **kwargs)
        folder = self.get_option("folder")
        if folder:
            install(str(folder))
