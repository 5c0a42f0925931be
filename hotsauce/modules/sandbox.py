"""How a command runs inside an image root while it is being built.

Everything that runs in the image (Ansible tasks, commands a Python module
starts, package installs, the debugging shells) goes through
`command_in_image`, so that one place decides how the image is entered.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def command_in_image(root: Path, argv: Sequence[str]) -> list[str]:
    """The argument list that runs `argv` inside the image root."""
    return ["chroot", str(root), *argv]
