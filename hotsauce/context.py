"""One build's state, handed to every stage (mkosi's `Context` is the model).

`BuildContext` holds what a stage may need: the configuration and options,
the build's folders, the cache, the log folder, the build id, the stage
brackets (events, times), the ledger and the cancel callable. `Stages` brackets each
stage and knows, when something fails, in which stage it was and which
folder was full: `failure()` turns the error into the one the caller gets.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hotsauce.bases.debian import PlannedBase
from hotsauce.config import BuildConfig, BuildOptions, DebianBase
from hotsauce.errors import BuildCancelled, BuildFailed, Cancelled, ConfigError, HotsauceError
from hotsauce.events import Emit, Event, EventKind, Stage, StageTimes, ignore, stage
from hotsauce.host import cancel
from hotsauce.host.cancel import CancelRequested
from hotsauce.host.ledger import Ledger
from hotsauce.host.sizes import human_size
from hotsauce.modules.resolve import ResolvedModule
from hotsauce.store.cache import Cache

NO_SPACE = "No space left on device"
# Below this much free space a folder counts as full (filesystems keep a little back).
FULL_BELOW_BYTES = 1 << 20
# Where a full disk means the image itself is too small: its root is being written.
IMAGE_FILLING_STAGES = frozenset({Stage.BASE, Stage.MODULES, Stage.FINISH})


@dataclass(frozen=True)
class Plan:
    """Everything checked and resolved before a byte is allocated."""

    modules: tuple[ResolvedModule, ...]
    roles_path: tuple[Path, ...]
    collections_path: tuple[Path, ...]


@dataclass(frozen=True)
class BuildPaths:
    work: Path  # the build's temporary folder, removed at the end
    staging: Path  # beside -o: the set is written here, then published

    @property
    def image(self) -> Path:
        return self.work / "disk.raw"

    @property
    def root(self) -> Path:
        """Where the image's root filesystem is mounted."""
        return self.work / "root"


@dataclass
class Stages:
    """The stage brackets of one build: events, times, and where a failure happened.

    `folders` are those the build fills on the host; which of them were full
    is looked at when a stage fails, before the build releases its files: by
    the time the error reaches the caller the space is free again.
    """

    folders: Mapping[str, Path]
    emit: Emit = ignore  # the build's emitter, once its log is open
    times: StageTimes = field(default_factory=StageTimes)
    current: Stage = Stage.CONFIG
    full: list[str] = field(default_factory=list)

    @contextmanager
    def bracket(self, name: Stage) -> Iterator[None]:
        """One stage: a cancel is honoured before it starts; a failure in it is located."""
        cancel.check()
        self.current = name
        try:
            with stage(self.emit, name, self.times):
                yield
        except BaseException:
            self.full = full_folders(self.folders)
            raise

    def failure(self, error: BaseException, options: BuildOptions) -> BaseException:
        """What the caller gets for `error`: bad input as it is, any other failure located.
        Anything else (a bug) goes on as it is."""
        if isinstance(error, ConfigError):
            return error
        if isinstance(error, Cancelled):
            return BuildCancelled(self.current, error, str(error))
        if not isinstance(error, HotsauceError | OSError):
            return error
        reason = str(error) if isinstance(error, HotsauceError) else _describe_os_error(error)
        return BuildFailed(self.current, error, reason, self._space_hint(error, reason, options))

    def _space_hint(self, error: HotsauceError | OSError, reason: str, options: BuildOptions) -> str | None:
        """Name the folder that filled up; if none did, it was the image itself."""
        full = self.full or full_folders(self.folders)
        if full:
            return "; ".join(full)
        out_of_space = (isinstance(error, OSError) and error.errno == errno.ENOSPC) or NO_SPACE in reason
        if out_of_space and self.current in IMAGE_FILLING_STAGES:
            return f"the image is full: -s {human_size(options.size)} is too small for the base and modules"
        return None


def folders_filled_by(options: BuildOptions) -> dict[str, Path]:
    return {"the work folder": (options.work_dir or Path(tempfile.gettempdir())).absolute(),
            "the output folder": options.output.absolute().parent}


def full_folders(folders: Mapping[str, Path]) -> list[str]:
    return [f"{what} {folder} is full" for what, folder in folders.items() if _free_bytes(folder) < FULL_BELOW_BYTES]


def _free_bytes(folder: Path) -> int:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return FULL_BELOW_BYTES  # cannot tell: do not blame it
    return stats.f_bavail * stats.f_frsize


def _describe_os_error(error: OSError) -> str:
    where = f": {error.filename}" if error.filename else ""
    return f"{error.strerror or error}{where}"


def checking_cancel(emit: Emit) -> Emit:
    """`emit`, looking at the cancel after each progress event: progress comes from the
    build's long copies (download, unpack, compress), which have no other wait to look in."""

    def emitted(event: Event) -> None:
        emit(event)
        if event.kind is EventKind.PROGRESS:
            cancel.check()

    return emitted


@dataclass(frozen=True)
class BuildContext:
    """What every stage of one build takes."""

    config: BuildConfig
    options: BuildOptions
    build_id: str
    cache: Cache
    log_dir: Path
    paths: BuildPaths
    plan: Plan
    stages: Stages
    ledger: Ledger | None  # what the build holds, for `hotsauce cleanup`; None without a writable run folder
    cancel: CancelRequested | None  # asked at stage boundaries and in long waits (hotsauce.host.cancel)
    # What runs beside the stages until the build ends (a probe, say); released with the build.
    background: ExitStack
    # What the mirror said of each Debian base (its Release dates): asked once per build.
    base_plans: dict[DebianBase, PlannedBase] = field(default_factory=dict)

    @property
    def emit(self) -> Emit:
        return self.stages.emit

    @property
    def times(self) -> StageTimes:
        return self.stages.times

    def stage(self, name: Stage) -> AbstractContextManager[None]:
        return self.stages.bracket(name)
