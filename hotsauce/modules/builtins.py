"""Where the project's built-in roles, playbooks, Python modules and inventory are.

Installed, they ship inside the package (hotsauce/_builtin/...); from a
checkout they are the top-level folders of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def builtin_folder(name: str) -> Path:
    """`roles`, `playbooks`, `python_modules` or `inventory` of this installation."""
    shipped = _PACKAGE / "_builtin" / name
    if shipped.is_dir():
        return shipped
    return _PACKAGE.parent / name
