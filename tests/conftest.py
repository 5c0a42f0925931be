"""Shared fixtures: one Debian root and one Glance per test run, and a leak check after every test."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hotsauce.bases.debian import provide_debian_base
from hotsauce.config import DebianBase
from hotsauce.events import Event
from hotsauce.host.mounts import mount_points_below
from hotsauce.store.cache import CACHE_ENV, Cache
from tests.glance_images import CLOUD
from tests.glance_server import GlanceServer, running_glance
from tests.leaks import held_resources

if TYPE_CHECKING:  # openstacksdk is the optional [upload] dependency: imported where it is used
    from openstack.connection import Connection

pytest_plugins = ["tests.faults.plugin"]

TEST_ROOTFS_ENV = "HOTSAUCE_TEST_ROOTFS"  # a developer may point this at a root tarball made earlier
TEST_CACHE_ENV = "HOTSAUCE_TEST_CACHE"  # ... and this at a cache folder kept between runs


def host_apt_sources() -> Path:
    """The host's deb822 sources: mmdebstrap reads the mirror from them as they are."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    if not sources:
        pytest.skip("this host has no deb822 apt sources to bootstrap from")
    return sources[0]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to start over a mount left below pytest's temporary folders (by a run that was
    killed before it released a build chroot): pytest removes old temporary folders with rmtree,
    and through a chroot's bind of /dev that deletes the host's devices."""
    # With --basetemp pytest empties only that folder; otherwise it prunes its own numbered ones.
    given = session.config.option.basetemp
    root = Path(given).absolute() if given else Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"
    if left := mount_points_below(root):
        pytest.exit(f"{left[0]} is still mounted below {root}: unmount it (or run `hotsauce cleanup`) "
                    "before running the tests", returncode=3)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One hotsauce cache for the whole run: the default Debian base is bootstrapped
    into it once, and every build the tests run (HOTSAUCE_CACHE) is served from it."""
    folder = Path(os.environ.get(TEST_CACHE_ENV) or tmp_path_factory.mktemp("cache"))
    saved = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = saved


@pytest.fixture(scope="session")
def debian_rootfs_tarball(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bootable Debian bookworm root as a tar.zst, bootstrapped once per run from the host's
    mirror: the default base's entry in the session cache, so builds of it are warm."""
    if given := os.environ.get(TEST_ROOTFS_ENV):
        return Path(given)
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed")
    host_apt_sources()
    root = tmp_path_factory.mktemp("bootstrap")
    events: list[Event] = []
    provide_debian_base(DebianBase(), root, Cache(session_cache), events.append)
    subprocess.run(["rm", "-rf", "--one-file-system", root], check=True)
    return next(Path(e.data["entry"]) for e in events if "entry" in e.data)


@pytest.fixture(scope="session", autouse=True)
def temporary_files_in_the_test_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Builds run by the tests keep their temporary files under this run's folder,
    so the leak check can tell them from anything else on the machine."""
    folder = tmp_path_factory.getbasetemp() / "tmp"
    folder.mkdir(exist_ok=True)
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    yield folder
    tempfile.tempdir = saved_tempdir
    if saved_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved_env


_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep the test's own outcome where its fixtures' teardown can read it."""
    report = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report


@pytest.fixture(autouse=True)
def nothing_left_behind(request: pytest.FixtureRequest,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After every test: no loop device backed by, and no mount under, this run's folders.
    A test that passed and left nothing then gives its folder back: a full run builds some
    sixty images, and keeping them all would need more disk than a CI machine has."""
    ours = str(tmp_path_factory.getbasetemp())
    before = held_resources(ours)
    yield
    leaked = held_resources(ours) - before
    assert not leaked, f"the test left these attached or mounted: {sorted(leaked)}"
    report = request.node.stash.get(_CALL_REPORT, None)
    folder = getattr(request.node, "funcargs", {}).get("tmp_path")
    if report is not None and report.passed and isinstance(folder, Path):
        _remove_test_folder(folder)


def _remove_test_folder(folder: Path) -> None:
    # Never across a mount: through a leftover bind of /dev, rm would delete the host's devices.
    if not mount_points_below(folder):
        subprocess.run(["rm", "-rf", "--one-file-system", folder], check=True)


# --- the suite's Glance: one per session, for every upload test ----------------------------------


@pytest.fixture(scope="session")
def glance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    with running_glance(tmp_path_factory.mktemp("glance")) as server:
        yield server


@pytest.fixture
def cloud(glance: GlanceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The cloud name a user would pass, set up in a clouds.yaml of this test's own."""
    if not glance.answers():
        glance.start()  # a test that stopped Glance may have failed before restarting it
    for variable in [v for v in os.environ if v.startswith("OS_")]:
        monkeypatch.delenv(variable)
    clouds_yaml = tmp_path / "clouds.yaml"
    clouds_yaml.write_text(glance.clouds_yaml(CLOUD))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml))
    return CLOUD


@pytest.fixture
def glance_api(cloud: str) -> Connection:
    """An openstacksdk connection for the test's own look at what Glance holds."""
    import openstack

    return openstack.connect(cloud=cloud)
