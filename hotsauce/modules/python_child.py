"""The child process a Python module runs in: `python -m hotsauce.modules.python_child PAYLOAD`.

PAYLOAD is a pickle written by hotsauce.modules.python_run: the module's
file and name, the root, cfg (pickled, so every type YAML gives survives:
dates, integers as keys, ...) and where to write the outcome. The outcome is
JSON: `{"ok": true}`, or `{"ok": false, "error": ONE LINE}`. This file
imports as little as it can: its start-up is paid once per Python module.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
import traceback
from pathlib import Path
from typing import Any

# The longest source line quoted in a failure.
QUOTED_LINE_LIMIT = 100


def main(argv: list[str]) -> int:
    payload = pickle.loads(Path(argv[1]).read_bytes())
    outcome = run_module(Path(payload["path"]), payload["name"], payload["root"], payload["cfg"])
    # The module may have changed the working directory: the result path is absolute.
    Path(payload["result"]).write_text(json.dumps(outcome))
    return 0 if outcome["ok"] else 1


def run_module(path: Path, name: str, root: str, cfg: dict[str, Any]) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location(f"hotsauce_module_{path.stem}", path)
    if spec is None or spec.loader is None:
        return {"ok": False, "error": f"cannot load {path}"}
    loaded = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(loaded)
    except BaseException as error:  # a module that exits while loading fails the same way
        return {"ok": False, "error": f"cannot load {path}: {describe(error, path)}"}
    try:
        loaded.modify(name, root, cfg)
    except BaseException as error:  # SystemExit too: modify is expected to return
        return {"ok": False, "error": describe(error, path)}
    return {"ok": True}


def describe(error: BaseException, path: Path) -> str:
    """The error and the last line of the module's own file that was running."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == str(path)]
    text = f"{type(error).__name__}: {error}".rstrip(": ")
    if not frames:
        return text
    last = frames[-1]
    quoted = (last.line or "").strip()
    if len(quoted) > QUOTED_LINE_LIMIT:
        quoted = quoted[: QUOTED_LINE_LIMIT - 3] + "..."
    return f"{text} (at {path.name}:{last.lineno}: {quoted})" if quoted else f"{text} (at {path.name}:{last.lineno})"


if __name__ == "__main__":
    sys.exit(main(sys.argv))
