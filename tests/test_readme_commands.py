"""The README's commands work as written on a fresh Debian 12 machine where one is root and
sudo is not installed."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands() -> list[str]:
    """Each command line of the README: its shell blocks' lines, and its inline `code` spans."""
    text = README.read_text()
    blocks = re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    return lines + re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))


def test_the_readme_commands_never_need_sudo() -> None:
    commands = readme_commands()
    assert [command for command in commands if re.match(r"sudo\b", command)] == []
    assert any(command.startswith("scripts/hotsauce build") for command in commands)
