"""Progress bars: one bar for build and upload, drawn in place on a terminal, a line per
finished file in an upload's log, nothing in a build's."""

from __future__ import annotations

import io

from hotsauce.commands.progress import TerminalReporter
from hotsauce.commands.upload import UploadReporter
from hotsauce.events import Event

MIB = 1 << 20


class Terminal(io.StringIO):
    """What a reporter writes to when stderr is a terminal."""

    def isatty(self) -> bool:
        return True


def progress(message: str, done: int, total: int) -> Event:
    return Event("progress", "publish", message, {"done": done, "total": total})


def test_on_a_terminal_a_bar_that_ends_full_ends_its_line_at_once_and_only_once() -> None:
    terminal = Terminal()
    reporter = TerminalReporter(terminal)
    for done in (MIB, 2 * MIB, 2 * MIB):  # a copy may report its end twice
        reporter(progress("compressing", done, 2 * MIB))

    output = terminal.getvalue()
    assert output.endswith("\n") and output.count("\n") == 1
    assert output.rsplit("\r", 1)[-1].split() == ["compressing", f"[{'#' * 30}]", "2.0M/2.0M"]


def test_on_a_terminal_a_new_bar_starts_on_a_line_of_its_own() -> None:
    terminal = Terminal()
    reporter = UploadReporter(terminal)
    reporter(progress("kernel vmlinuz", MIB, 2 * MIB))
    reporter(progress("root root.qcow2", MIB, 4 * MIB))
    reporter(Event("info", "upload", "uploaded"))

    lines = terminal.getvalue().split("\n")
    assert [line.split()[:2] for line in lines[:2]] == [["kernel", "vmlinuz"], ["root", "root.qcow2"]]
    assert lines[2] == "uploaded"


def test_off_a_terminal_a_build_shows_no_bar_and_an_upload_one_line_per_finished_file() -> None:
    build_log, upload_log = io.StringIO(), io.StringIO()
    build_reporter, upload_reporter = TerminalReporter(build_log), UploadReporter(upload_log)
    for done in (0, MIB, 2 * MIB, 2 * MIB):
        build_reporter(progress("unpacking", done, 2 * MIB))
        upload_reporter(progress("root root.qcow2", done, 2 * MIB))

    assert build_log.getvalue() == ""
    assert upload_log.getvalue().splitlines() == [f"{'root root.qcow2':<24} [{'#' * 30}] 2.0M/2.0M"]


def test_a_bar_of_unknown_size_shows_what_is_done() -> None:
    terminal = Terminal()
    TerminalReporter(terminal)(progress("downloading", 3 * MIB, 0))
    assert terminal.getvalue().split() == ["downloading", "3.0M"]
