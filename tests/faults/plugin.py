"""A pytest plugin that prints the fault x stage -> outcome table at the end of the run.

Fault tests call `record_outcome(fault, stage, outcome)`; the table is printed
by pytest's terminal summary, so it shows without `-s`.
"""

from __future__ import annotations

import pytest

_OUTCOMES: dict[tuple[str, str], str] = {}


def record_outcome(fault: str, stage: str, outcome: str) -> None:
    _OUTCOMES[(fault, stage)] = outcome


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _OUTCOMES:
        return
    faults = list(dict.fromkeys(fault for fault, _ in _OUTCOMES))
    stages = list(dict.fromkeys(stage for _, stage in _OUTCOMES))
    width = max(len(s) for s in stages) + 2
    columns = {
        fault: max(len(fault), *(len(o) for (f, _), o in _OUTCOMES.items() if f == fault)) + 2 for fault in faults
    }
    terminalreporter.section("faults: stage x fault -> outcome")
    terminalreporter.write_line("stage".ljust(width) + "".join(f.ljust(columns[f]) for f in faults))
    for stage in stages:
        cells = "".join(_OUTCOMES.get((fault, stage), "-").ljust(columns[fault]) for fault in faults)
        terminalreporter.write_line(stage.ljust(width) + cells)
