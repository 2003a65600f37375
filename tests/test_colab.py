"""Colab, offline: a Python without the project installs torchdojo from a wheel in a lesson's first cell, then the
lesson finds its data and a check passes."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from grader.build import INSTALL_CELL, INSTALL_SOURCE, ROOT


# What Colab lacks: torchdojo, and what the `course` extra adds for the course's own environment
COURSE_ONLY = ("jupyterlab", "jupytext", "nbgrader")


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def _site_packages(python: Path) -> Path:
    return Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        text=True).strip())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """torchdojo's wheel, built offline from a copy of what the build reads (a build/ folder left in the checkout
    could carry files that are gone)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in ("grader", "datasets"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "-w", str(tmp), str(src)], check=True)
    return next(tmp.glob("torchdojo-*.whl"))


@pytest.fixture
def bare_python(tmp_path) -> Path:
    """A new virtual environment that has what the lessons need but not torchdojo, as Colab before the first cell:
    it sees this environment's packages through links, all but torchdojo's own files (its editable finder, and its
    metadata, which would tell pip that torchdojo is installed) and the course-only packages."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = _site_packages(python)
    others = env / "others"
    others.mkdir()
    hidden = {"grader"} | {f.parts[0] for name in COURSE_ONLY for f in distribution(name).files}
    for p in Path(sysconfig.get_path("purelib")).iterdir():
        if "torchdojo" not in p.name and p.name not in hidden and p.suffix != ".pth":
            (others / p.name).symlink_to(p)
    (site / "others.pth").write_text(f"{others}\n")
    # Colab has Hugging Face's `datasets` package: a site-packages/datasets/ that is not the course's data
    (site / "datasets").mkdir()
    (site / "datasets" / "__init__.py").write_text("")
    probe = subprocess.run([python, "-c", "import importlib.util as u; assert u.find_spec('ipykernel') and "
                            "u.find_spec('torch') and not u.find_spec('nbgrader'); import grader"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert "No module named 'grader'" in probe.stderr, probe.stderr
    return python


@pytest.fixture
def offline(monkeypatch):
    """pip may not reach a package index, nor read this machine's pip configuration."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    for name in ("PYTHONPATH", "TORCHDOJO_DATA", "TORCHDOJO_SOURCE"):
        monkeypatch.delenv(name, raising=False)


def test_the_wheel_carries_the_package_and_every_dataset_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"grader/{f}" for f in _files(ROOT / "grader") if f.endswith(".py")} <= names
    assert {f"grader/datasets/{f}" for f in _files(ROOT / "datasets")} <= names


@pytest.mark.notebook
def test_a_lesson_installs_torchdojo_from_a_wheel_and_a_check_passes(wheel, bare_python, offline, tmp_path,
                                                                     monkeypatch):
    spec = tmp_path / "jupyter" / "kernels" / "bare"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [str(bare_python), "-m", "ipykernel_launcher", "-f",
                                                           "{connection_file}"], "display_name": "bare",
                                                  "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("TORCHDOJO_SOURCE", str(wheel))

    # The learner's notebook up to the cell that finds the data, then a probe, then one exercise answered
    nb = nbformat.read(ROOT / "lessons" / "06_data.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = code[:next(i for i, c in enumerate(code) if "datasets_dir()" in c.source) + 1]
    assert first[0].source == INSTALL_CELL
    probe = nbformat.v4.new_code_cell("import grader, json\n"
                                      "print(json.dumps({'grader': grader.__file__, 'digits': str(DIGITS)}))")
    solution = {c.id: c for c in nbformat.read(ROOT / "solutions" / "06_data.ipynb", as_version=4).cells}
    shown = nbformat.v4.new_code_cell('from grader import progress\nprogress("06_data")')
    nb.cells = first + [probe, solution["pad_collate-answer"], solution["pad_collate-check"], shown]
    workdir = tmp_path / "content"  # the kernel's working folder, away from the repository
    workdir.mkdir()
    NotebookClient(nb, timeout=120, kernel_name="bare", resources={"metadata": {"path": str(workdir)}}).execute()

    found = json.loads(probe.outputs[-1].text)
    site = _site_packages(bare_python)
    assert Path(found["grader"]) == site / "grader" / "__init__.py"
    assert Path(found["digits"]) == site / "grader" / "datasets" / "digits"
    assert "pad_collate" in "".join(o.get("text", "") for o in shown.outputs), shown.outputs
    progress = json.loads((Path(os.environ["TORCHDOJO_HOME"]) / "progress.json").read_text())
    assert progress["pad_collate"]["status"] == "passed", progress


def test_the_install_cell_does_nothing_where_torchdojo_is_installed(tmp_path, offline):
    # pip would fail on this source, so a clean run shows that the cell never called it
    env = {**os.environ, "TORCHDOJO_SOURCE": str(tmp_path / "torchdojo-0.1.0-py3-none-any.whl")}
    done = subprocess.run([sys.executable, "-c", INSTALL_CELL], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.skipif(bool(INSTALL_SOURCE), reason="grader/build.py names an install source")
def test_without_a_source_the_install_cell_says_what_to_set(bare_python, tmp_path, offline):
    done = subprocess.run([bare_python, "-c", INSTALL_CELL], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1
    assert "RuntimeError: torchdojo is not installed here: set TORCHDOJO_SOURCE" in done.stderr, done.stderr
