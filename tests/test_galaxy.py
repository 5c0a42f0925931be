"""install_requirements: Galaxy roles from a requirements.yml into the cache, offline."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hotsauce.errors import ConfigError
from hotsauce.events import Event
from hotsauce.modules.galaxy import install_requirements
from hotsauce.store.cache import Cache

DATA = Path(__file__).parent / "data" / "ansible"


def requirements_with_tarball(folder: Path) -> Path:
    subprocess.run(
        ["tar", "-C", str(DATA / "galaxy"), "-czf", str(folder / "acme_web.tar.gz"), "acme_web"],
        check=True,
    )
    requirements = folder / "requirements.yml"
    requirements.write_text("roles:\n  - src: ./acme_web.tar.gz\n    name: acme.webserver\n")
    return requirements


def test_a_role_from_a_local_tarball_is_installed_into_the_cache(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    roles, collections = install_requirements(
        requirements_with_tarball(tmp_path), cache, lambda _e: None
    )
    assert (roles[0] / "acme.webserver" / "tasks" / "main.yml").is_file()
    assert roles[0].is_relative_to(cache.root) and collections[0].is_relative_to(cache.root)


def test_an_unchanged_requirements_file_is_served_from_the_cache(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    requirements = requirements_with_tarball(tmp_path)
    first = install_requirements(requirements, cache, lambda _e: None)
    events: list[Event] = []
    assert install_requirements(requirements, cache, events.append) == first
    assert [e.message for e in events] == [
        f"roles and collections of {requirements} from the cache"
    ]


def test_a_changed_requirements_file_gets_a_new_cache_entry(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    requirements = requirements_with_tarball(tmp_path)
    first, _ = install_requirements(requirements, cache, lambda _e: None)
    requirements.write_text(requirements.read_text().replace("acme.webserver", "acme.web"))
    second, _ = install_requirements(requirements, cache, lambda _e: None)
    assert second != first and (second[0] / "acme.web").is_dir()


def test_a_role_that_cannot_be_installed_names_the_file_and_the_role(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.yml"
    requirements.write_text("- src: ./no-such-role.tar.gz\n  name: acme.missing\n")
    with pytest.raises(
        ConfigError, match=r"requirements\.yml: role 'acme\.missing' cannot be installed"
    ):
        install_requirements(requirements, Cache(tmp_path / "cache"), lambda _e: None)
    assert not list((tmp_path / "cache" / "galaxy").glob("[!.]*"))


def test_a_requirements_file_that_is_not_a_list_or_mapping_is_a_config_error(
    tmp_path: Path,
) -> None:
    requirements = tmp_path / "requirements.yml"
    requirements.write_text("just a string\n")
    with pytest.raises(ConfigError, match=r"requirements\.yml: expected a list of roles"):
        install_requirements(requirements, Cache(tmp_path / "cache"), lambda _e: None)


def test_without_the_cache_requirements_are_installed_afresh_and_the_cache_is_untouched(
    tmp_path: Path,
) -> None:
    requirements = requirements_with_tarball(tmp_path)
    install_requirements(requirements, Cache(tmp_path / "cache"), lambda _e: None)
    cached = sorted((tmp_path / "cache").rglob("*"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    events: list[Event] = []

    roles, collections = install_requirements(
        requirements, Cache(tmp_path / "cache", enabled=False), events.append, scratch=scratch
    )

    assert (roles[0] / "acme.webserver" / "tasks" / "main.yml").is_file()
    assert roles[0].is_relative_to(scratch) and collections[0].is_relative_to(scratch)
    assert not any("from the cache" in event.message for event in events)
    assert sorted((tmp_path / "cache").rglob("*")) == cached
