"""The failures hotsauce reports: each is raised where the problem is found and
rendered as one line by the CLI, which exits with the class's `exit_status`
(the README's "Exit status" lists them)."""

from __future__ import annotations

from pathlib import Path


class HotsauceError(Exception):
    """A failure the user can act on; its message is the one line they see."""

    exit_status = 1


class ConfigError(HotsauceError):
    """Bad input: build.yaml, flags, module references. Nothing was allocated."""

    exit_status = 2


class UnknownLayout(ConfigError):
    """A set's manifest names a layout or boot mode this hotsauce cannot describe to libvirt."""


class ModuleFailed(HotsauceError):
    """A module (Python or Ansible) failed while it ran against the image."""

    def __init__(self, module: str, reason: str) -> None:
        super().__init__(f"module {module!r} failed: {reason}")
        self.module = module
        self.reason = reason


class StageFailed(HotsauceError):
    """A pipeline stage failed for a reason outside the user's input."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


class CommandFailed(HotsauceError):
    """An external command exited non-zero; its captured stderr tail is kept."""

    def __init__(self, argv: list[str], status: int, stderr: str) -> None:
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        super().__init__(f"{argv[0]} exited with status {status}: {tail}")
        self.argv = argv
        self.status = status
        self.stderr = stderr


class CacheFull(HotsauceError):
    """The filesystem of the cache folder has no room for an entry."""

    def __init__(self, folder: Path, what: str) -> None:
        super().__init__(f"the cache folder {folder} is full: {what} (free space there, or `hotsauce cache clear`)")
        self.folder = folder


class MirrorUnreachable(HotsauceError):
    """The Debian mirror's Release file could not be read."""


class PathEscapes(HotsauceError):
    """A path inside an image cannot be resolved within the image (hotsauce.rootpath)."""


class ChecksumMismatch(HotsauceError):
    """A file of an image set does not match its checksum file: the set given is damaged."""

    exit_status = 2


class QemuMissing(HotsauceError):
    """QEMU is not installed on this host."""


class FirmwareMissing(HotsauceError):
    """OVMF (UEFI firmware for QEMU) is not installed on this host."""


class KvmUnusable(HotsauceError):
    """KVM was asked for but cannot run a guest here."""


class QemuFailed(HotsauceError):
    """QEMU itself refused to run (bad option, missing file, no memory)."""


class BootFailed(HotsauceError):
    """The guest did not come up, or a check failed inside it."""


class GlanceError(HotsauceError):
    """Glance refused a request or could not be reached."""


class MissingOpenstackSdk(ConfigError):
    """`hotsauce upload` needs openstacksdk, which is not installed."""


class UploadFailed(HotsauceError):
    """The upload stopped; this run's images were deleted, or the message names them."""


class NameTaken(HotsauceError):
    """Glance already holds images of the name asked for, and --replace was not given.

    A status of its own, so that a script can tell "choose another name" from a failure.
    """

    exit_status = 3


class Interrupted(HotsauceError):
    """SIGINT or SIGTERM arrived; everything held was released on the way out."""

    exit_status = 130


class Cancelled(Interrupted):
    """The caller of `hotsauce.build.build()` cancelled it; everything held was released."""

    def __init__(self) -> None:
        super().__init__("cancelled; everything held was released")


class BuildFailed(HotsauceError):
    """A build that failed once its input was accepted: in which stage, why, and what may help.

    `cause` is the error raised where the problem was found (also `__cause__`);
    the exit status is the cause's.
    """

    def __init__(self, stage: str, cause: BaseException, reason: str, hint: str | None = None) -> None:
        located = reason if reason.startswith(f"{stage}: ") else f"{stage}: {reason}"
        super().__init__(f"{located} ({hint})" if hint else located)
        self.stage = stage
        self.cause = cause
        self.reason = reason
        self.hint = hint
        self.exit_status = getattr(cause, "exit_status", HotsauceError.exit_status)


class BuildCancelled(BuildFailed):
    """The build was cancelled through `build(cancel=...)`; `stage` is where it stopped."""
