"""A mount for the length of a block, recorded in the build's ledger.

It is recorded before `mount` runs, so a build killed with SIGKILL even
during it leaves the mount to `hotsauce cleanup`, and unmounted on the way
out, also on errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hotsauce.host import ledger, proc


@contextmanager
def mounted(mount_args: Sequence[str | Path], mountpoint: Path) -> Iterator[Path]:
    """`mount MOUNT_ARGS MOUNTPOINT` while the block runs."""
    with ledger.held(ledger.Kind.MOUNT, mountpoint.absolute()):
        proc.run(["mount", *mount_args, mountpoint])
        try:
            yield mountpoint
        finally:
            proc.run(["umount", mountpoint])
