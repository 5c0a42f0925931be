"""The chroot modules run in (stand-in; the Ansible work replaces it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from hotsauce import proc


@contextmanager
def _bind(source: str, target: Path) -> Iterator[None]:
    target.mkdir(parents=True, exist_ok=True)
    proc.run(["mount", "--bind", source, target])
    try:
        yield
    finally:
        proc.run(["umount", "--lazy", target])


@contextmanager
def build_chroot(root: Path) -> Iterator[None]:
    with ExitStack() as stack:
        for name in ("proc", "sys", "dev"):
            stack.enter_context(_bind(f"/{name}", root / name))
        yield
