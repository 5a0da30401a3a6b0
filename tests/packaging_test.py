"""The distribution: its name on PyPI is bt-images (`buildtool` and `bt` belong to others), the
import package stays `buildtool` and the command `bt`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from btrun import REPO


def test_the_wheel_is_bt_images_with_the_bt_command(tmp_path: Path) -> None:
    # Built from a copy: a build in the checkout would leave build/ and egg-info behind.
    source = tmp_path / "source"
    shutil.copytree(REPO / "buildtool", source / "buildtool")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    out = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = out.glob("*.whl")
    assert wheel.name.startswith("bt_images-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(info).decode()
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "\nName: bt-images\n" in metadata
    assert "[console_scripts]\nbt = buildtool.cli.entry:run\n" in entry_points
    assert "buildtool/cli/main.py" in names and "buildtool/cli/commands/import_bake.py" in names
    assert not any(n.startswith("tests/") for n in names)


def test_setup_checks_the_editable_install_under_the_distributions_name() -> None:
    setup = (REPO / ".ci/setup").read_text()
    project = (REPO / "pyproject.toml").read_text()
    assert 'name = "bt-images"' in project
    assert 'importlib.metadata.distribution("bt-images")' in setup
