"""Rendering build events for a person at a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from hotsauce.events import Event
from hotsauce.host.sizes import human_size


class ProgressBar:
    """One progress bar at a time: redrawn in place on a terminal, at most every
    REDRAW_SECONDS and always when full; off a terminal, nothing, or with
    `finished_lines` one line per finished bar (a log wants the outcome, not the motion).

    A total of 0 means the size is not known: the bar shows what is done so far.
    """

    REDRAW_SECONDS = 0.2
    WIDTH = 30

    def __init__(self, stream: TextIO, *, indent: str = "", finished_lines: bool = False) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.indent = indent
        self.finished_lines = finished_lines
        self._open: str | None = None  # the message of the bar drawn on the current line
        self._finished: str | None = None  # the message of the bar that last ended full
        self._last_draw = 0.0

    def update(self, message: str, done: int, total: int) -> None:
        finished = 0 < total <= done
        if not finished:
            self._finished = None
        elif self._finished == message:
            return  # already ended full: a copy may report the end more than once
        if not self.tty:
            if finished and self.finished_lines:
                self.stream.write(self._line(message, done, total) + "\n")
                self.stream.flush()
                self._finished = message
            return
        if self._open is not None and self._open != message:
            self.end()
        now = time.monotonic()
        if self._open == message and not finished and now - self._last_draw < self.REDRAW_SECONDS:
            return
        self._last_draw = now
        self.stream.write("\r" + self._line(message, done, total).ljust(78))
        self._open = message
        if finished:
            self.end()
            self._finished = message
        self.stream.flush()

    def end(self) -> None:
        """Close the line of an unfinished bar, before anything else is written."""
        if self._open is not None:
            self.stream.write("\n")
            self.stream.flush()
            self._open = None

    def _line(self, message: str, done: int, total: int) -> str:
        if not total:
            return f"{self.indent}{message:<24} {human_size(done)}"
        filled = self.WIDTH * min(done, total) // total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        return f"{self.indent}{message:<24} [{bar}] {human_size(done)}/{human_size(total)}"


class TerminalReporter:
    """Stage lines, progress bars on a terminal, and a timing table at the end."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.bar = ProgressBar(stream, indent="    ")

    def __call__(self, event: Event) -> None:
        if event.kind == "progress":
            self.bar.update(event.message, int(event.data.get("done", 0)), int(event.data.get("total", 0)))
            return
        self.bar.end()
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

    def _summary(self, event: Event) -> None:
        seconds: dict[str, float] = event.data.get("seconds", {})
        self._write(f"wrote {event.message}")
        for name, value in seconds.items():
            self._write(f"    {name:<10} {value:7.1f}s")
        self._write(f"    {'total':<10} {sum(seconds.values()):7.1f}s")

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
