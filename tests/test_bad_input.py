"""Bad input: one line naming the file, key, module or path, exit status 2, nothing allocated.

Each case goes through the CLI as a user would meet it; afterwards no loop
device, mount, temporary file or output exists, and no traceback was shown.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.faults.checks import assert_nothing_left
from tests.faults.projects import tiny_root_tarball
from tests.faults.scene import Scene, make_scene
from tests.images import run_hotsauce

pytestmark = pytest.mark.integration


def bad_build(scene: Scene, *extra: str, args: list[str | Path] | None = None) -> str:
    """Run the build; check exit 2 and that nothing was left; return the one-line reason."""
    result = run_hotsauce(*(args or scene.build_args(*extra)), cwd=scene.project, env=scene.env(), timeout=300)
    reason = assert_nothing_left(
        result, scratch=scene.scratch, work=scene.work, output=scene.output, run_dir=scene.run_dir
    )
    assert result.returncode == 2, result.stderr
    return reason


def with_yaml(tmp_path: Path, text: str) -> Scene:
    scene = make_scene(tmp_path, [])
    (scene.project / "build.yaml").write_text(text)
    return scene


def with_modules(tmp_path: Path, modules: list[str]) -> Scene:
    return make_scene(tmp_path, modules)


def with_base(tmp_path: Path, write_base: Callable[[Path], object], extra: str = "") -> Scene:
    """A scene over the base archive `write_base` writes at the path it is given (what it returns is ignored)."""
    scene = make_scene(tmp_path, [])
    base = tmp_path / "base.tar"
    write_base(base)
    (scene.project / "build.yaml").write_text(f"download:\n  from: {base}\n{extra}modules: []\n")
    return scene


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    scene = with_yaml(tmp_path, "modules: [stamp\nhostname: x\n")
    reason = bad_build(scene)
    assert f"{scene.project / 'build.yaml'}:" in reason and "malformed YAML" in reason


def test_a_key_of_the_wrong_type_names_the_key(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, [])
    (scene.project / "build.yaml").write_text((scene.project / "build.yaml").read_text() + "kernel: maybe\n")
    assert "kernel: expected true or false" in bad_build(scene)


def test_an_unknown_top_level_key_suggests_the_nearest_known_one(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, [])
    (scene.project / "build.yaml").write_text((scene.project / "build.yaml").read_text() + "hostnme: x\n")
    reason = bad_build(scene)
    assert "hostnme: unknown key" in reason and "did you mean 'hostname'" in reason


def test_an_unknown_module_lists_the_available_ones(tmp_path: Path) -> None:
    reason = bad_build(with_modules(tmp_path, ["no_such_module"]))
    assert "unknown module 'no_such_module'" in reason and "available: " in reason and "boom" in reason


@pytest.mark.parametrize("name", ["../x", "/etc/x"])
def test_a_module_name_that_is_a_path_is_refused(tmp_path: Path, name: str) -> None:
    assert f"modules[0]: expected a module name (a name, not a path), got {name!r}" in bad_build(
        with_modules(tmp_path, [name]))


def test_a_python_module_without_modify_is_refused(tmp_path: Path) -> None:
    scene = with_modules(tmp_path, ["nomodify"])
    (scene.project / "python_modules" / "nomodify.py").write_text("def change(root):\n    pass\n")
    reason = bad_build(scene)
    assert "nomodify.py has no function modify(name, root, cfg)" in reason


def test_a_python_module_with_the_wrong_signature_is_refused(tmp_path: Path) -> None:
    scene = with_modules(tmp_path, ["twoargs"])
    (scene.project / "python_modules" / "twoargs.py").write_text("def modify(name, root):\n    pass\n")
    reason = bad_build(scene)
    assert "twoargs.py: modify takes (name, root)" in reason


@pytest.mark.parametrize("size", ["lots", "0", "10M"])
def test_a_size_that_cannot_be_read_or_is_below_the_minimum_names_size(tmp_path: Path, size: str) -> None:
    scene = make_scene(tmp_path, [])
    args: list[str | Path] = ["build", "-s", size, "-o", scene.output, "--work-dir", scene.work]
    assert bad_build(scene, args=args).startswith("hotsauce: --size")


def _base_bigger_than_the_image(path: Path) -> None:
    tiny_root_tarball(path, {"var/big": b"\0" * (64 << 20)})


def test_a_size_too_small_for_the_base_is_refused_before_allocating(tmp_path: Path) -> None:
    scene = with_base(tmp_path, _base_bigger_than_the_image)
    args: list[str | Path] = ["build", "-s", "64M", "-o", scene.output, "--work-dir", scene.work]
    reason = bad_build(scene, args=args)
    assert reason.startswith("hotsauce: --size 64.0M: too small for the base") and "give at least" in reason


def test_an_unsupported_fs_type_is_refused(tmp_path: Path) -> None:
    assert "--fs-type: unsupported 'ntfs'" in bad_build(make_scene(tmp_path, []), "--fs-type", "ntfs")


def test_an_output_folder_that_does_not_exist_is_named(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, [])
    missing = tmp_path / "missing" / "set"
    args: list[str | Path] = ["build", "-s", "128M", "-o", missing, "--work-dir", scene.work]
    assert f"folder {missing.parent} does not exist" in bad_build(scene, args=args)


@contextmanager
def read_only_folder(folder: Path) -> Iterator[Path]:
    """A folder even root cannot write to: a read-only tmpfs (modes do not stop root)."""
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1M", "tmpfs", folder], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", folder], check=True)


def test_an_output_folder_that_is_not_writable_is_named(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, [])
    with read_only_folder(tmp_path / "readonly") as folder:
        output = folder / "set"
        args: list[str | Path] = ["build", "-s", "128M", "-o", output, "--work-dir", scene.work]
        result = run_hotsauce(*args, cwd=scene.project, env=scene.env())
    assert result.returncode == 2
    assert f"folder {folder} is not writable" in result.stderr.strip().splitlines()[-1]
    assert list(scene.work.iterdir()) == []


def test_an_existing_output_is_refused_without_force(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, [])
    scene.output.write_text("precious")
    result = run_hotsauce(*scene.build_args(), cwd=scene.project, env=scene.env())
    assert result.returncode == 2
    assert f"-o {scene.output}: already exists (use --force" in result.stderr
    assert scene.output.read_text() == "precious"
    assert list(scene.work.iterdir()) == []


def test_an_unreachable_download_names_the_url(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/root.tar"  # the discard port: nothing listens there
    scene = with_yaml(tmp_path, f"download:\n  from: {url}\nmodules: []\n")
    assert f"download.from: {url}: not reachable" in bad_build(scene)


def test_a_download_that_is_not_an_archive_is_named(tmp_path: Path) -> None:
    scene = with_base(tmp_path, lambda path: path.write_text("this is not a tarball\n" * 100))
    assert "not a readable tar archive" in bad_build(scene)


def test_a_download_whose_sha256_does_not_match_is_refused(tmp_path: Path) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    scene = with_base(tmp_path, tiny_root_tarball, extra="")
    text = (scene.project / "build.yaml").read_text().replace("modules:", f"  sha256: {wrong}\nmodules:")
    (scene.project / "build.yaml").write_text(text)
    assert "download.sha256: " in bad_build(scene) and "does not match" in bad_build(scene)


def _archive_with(members: list[tuple[str, str | None]]) -> Callable[[Path], None]:
    """A root archive of files and (name, target) symlinks, in order."""

    def write(path: Path) -> None:
        with tarfile.open(path, "w") as tar:
            for name, link in members:
                info = tarfile.TarInfo(name)
                if link is None:
                    info.size = 4
                    tar.addfile(info, io.BytesIO(b"evil"))
                else:
                    info.type, info.linkname = tarfile.SYMTYPE, link
                    tar.addfile(info)

    return write


@pytest.mark.parametrize(
    ("members", "offender"),
    [
        ([("../escaped", None)], "../escaped"),
        ([("/etc/escaped", None)], "/etc/escaped"),
        ([("etc", "/etc"), ("etc/escaped", None)], "etc/escaped"),
        ([("up", "../.."), ("up/escaped", None)], "up/escaped"),
    ],
    ids=["dot-dot", "absolute", "through an absolute symlink", "through a relative symlink"],
)
def test_a_root_archive_member_leaving_the_root_is_refused(
    tmp_path: Path, members: list[tuple[str, str | None]], offender: str
) -> None:
    reason = bad_build(with_base(tmp_path, _archive_with(members)))
    assert f"member {offender!r} would land outside the root" in reason
    assert not Path("/etc/escaped").exists()


def test_a_requirements_file_naming_a_role_that_cannot_be_installed_is_named(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, [])
    (scene.project / "requirements.yml").write_text("roles:\n  - name: nobody.no_such_role_anywhere\n")
    assert "nobody.no_such_role_anywhere" in bad_build(scene)


@pytest.mark.parametrize(("boot", "lacking"), [("uefi", "grub-efi-amd64-bin"), ("bios", "grub-pc-bin")])
def test_a_downloaded_base_without_the_grub_its_disk_boots_with_is_refused_before_allocation(
    tmp_path: Path, boot: str, lacking: str
) -> None:
    scene = with_base(tmp_path, tiny_root_tarball, extra=f"layout: disk\nboot: {boot}\n")
    reason = bad_build(scene, "-s", "1G")
    assert f"download.from file://{tmp_path / 'base.tar'}: the base has no " in reason
    assert lacking in reason and f"a {boot} disk" in reason
