"""Rendering build events for a person at a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from hotsauce.events import Event
from hotsauce.host.sizes import human_size


class TerminalReporter:
    """Stage lines, progress bars on a terminal (throttled), and a timing table at the end."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last_progress = 0.0
        self._progress_shown = False

    def __call__(self, event: Event) -> None:
        if event.kind == "progress":
            self._progress(event)
            return
        self._end_progress()
        if event.kind == "stage-start":
            self._write(f"==> {event.stage}")
        elif event.kind == "stage-end":
            self._write(f"    {event.stage} done in {event.data.get('seconds', 0):.1f}s")
        elif event.kind == "stage-failed":
            self._write(f"!!! {event.stage} failed after {event.data.get('seconds', 0):.1f}s")
        elif event.kind in ("info", "warning"):
            prefix = "warning: " if event.kind == "warning" else ""
            self._write(f"    {prefix}{event.message}")
        elif event.kind == "output":  # what a module's tool prints, streamed as it runs
            self._write(event.message.rstrip("\n"))
        elif event.kind == "finished":
            self._summary(event)

    def _progress(self, event: Event) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        done, total = int(event.data.get("done", 0)), int(event.data.get("total", 0))
        if now - self._last_progress < 0.2 and done != total:
            return
        self._last_progress = now
        if total:
            filled = int(30 * done / total)
            bar = "#" * filled + "-" * (30 - filled)
            line = f"    {event.message} [{bar}] {human_size(done)}/{human_size(total)}"
        else:
            line = f"    {event.message} {human_size(done)}"
        self.stream.write("\r" + line.ljust(78))
        self.stream.flush()
        self._progress_shown = True

    def _end_progress(self) -> None:
        if self._progress_shown:
            self.stream.write("\n")
            self._progress_shown = False

    def _summary(self, event: Event) -> None:
        seconds: dict[str, float] = event.data.get("seconds", {})
        self._write(f"wrote {event.message}")
        for name, value in seconds.items():
            self._write(f"    {name:<10} {value:7.1f}s")
        self._write(f"    {'total':<10} {sum(seconds.values()):7.1f}s")

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
