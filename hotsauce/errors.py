"""The failures hotsauce reports: each is raised where the problem is found and
rendered as one line by the CLI."""

from __future__ import annotations


class HotsauceError(Exception):
    """A failure the user can act on; its message is the one line they see."""

    exit_status = 1


class ConfigError(HotsauceError):
    """Bad input: build.yaml, flags, module references. Nothing was allocated."""

    exit_status = 2


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


class Interrupted(HotsauceError):
    """SIGINT or SIGTERM arrived; everything held was released on the way out."""

    exit_status = 130
