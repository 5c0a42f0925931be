"""Every failure hotsauce reports is declared in hotsauce.errors, and every exit status it
can end with is in the README."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import hotsauce
from hotsauce import errors

README = Path(__file__).resolve().parent.parent / "README.md"
# Ansible loads these itself; importing them outside ansible-playbook proves nothing here.
NOT_IMPORTED = ("hotsauce.modules.ansible_plugins.", "hotsauce.__main__")


def hotsauce_modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages(hotsauce.__path__, "hotsauce.")]
    return sorted(name for name in names if not name.startswith(NOT_IMPORTED))


def test_every_exception_class_of_hotsauce_is_declared_in_hotsauce_errors() -> None:
    elsewhere = []
    for name in hotsauce_modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name and name != errors.__name__:
                elsewhere.append(f"{name}.{value.__name__}")
    assert elsewhere == []


def exit_status_table() -> dict[int, str]:
    section = README.read_text().split("\n## Exit status\n", 1)[1].split("\n## ", 1)[0]
    return {int(status): meaning for status, meaning in re.findall(r"^\| (\d+) \| (.*) \|$", section, re.M)}


def test_the_readme_lists_every_exit_status_and_the_errors_that_set_one() -> None:
    table = exit_status_table()
    declared = [value for _, value in inspect.getmembers(errors, inspect.isclass)
                if issubclass(value, errors.HotsauceError)]
    assert {0} | {error.exit_status for error in declared} == set(table)
    for error in declared:
        if "exit_status" in vars(error):  # a class that sets a status of its own is named beside it
            assert f"`{error.__name__}`" in table[error.exit_status], error.__name__
