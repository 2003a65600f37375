"""solutions/NN_topic.py (jupytext percent, nbgrader markers) -> lessons/NN_topic.ipynb + solutions/NN_topic.ipynb.

The pipeline is a short list of named steps; the student version is made by nbgrader's own ClearSolutions and
ClearHiddenTests preprocessors, so a real nbgrader course sees exactly the cells and metadata it expects.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import jupytext
import nbformat
from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

from grader.registry import exercises

ROOT = Path(__file__).resolve().parent.parent
CHECK_LINE = re.compile(r"^check\((\w+)\)$")
DEFINES = re.compile(r"^(?:def|class)\s+(\w+)", re.MULTILINE)
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def _checked_names(source: str) -> list[str]:
    """The exercises a check cell checks; [] when the cell is not a check cell."""
    lines = [ln.strip() for ln in source.splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    matches = [CHECK_LINE.match(ln) for ln in lines]
    return [m.group(1) for m in matches] if lines and all(matches) else []


def clean(nb, lesson: str):
    """No outputs, no execution counts, no editor metadata; stable cell ids."""
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    for i, cell in enumerate(nb.cells):
        cell.metadata = {}
        cell.id = f"{lesson}-{i:03d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def mark_cells(nb, lesson: str):
    """nbgrader metadata: answer cells are solution cells, check cells are locked autograded tests."""
    known = exercises()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "### BEGIN SOLUTION" in cell.source:
            names = DEFINES.findall(cell.source)
            if not names:
                raise ValueError(f"{lesson}: a solution cell must define a function or class:\n{cell.source}")
            cell.id = f"{names[0]}-answer"
            cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False,
                                         "grade_id": f"{names[0]}-answer", "schema_version": 3}
        elif checked := _checked_names(cell.source):
            missing = [n for n in checked if n not in known]
            if missing:
                raise ValueError(f"{lesson}: check cell names unknown exercise(s) {missing}")
            cell.id = f"{checked[0]}-check"
            cell.metadata["editable"] = False
            cell.metadata["deletable"] = False
            cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True,
                                         "grade_id": f"{checked[0]}-check", "schema_version": 3,
                                         "points": sum(known[n].points for n in checked)}
    return nb


def student_version(nb):
    """The lesson as a learner gets it: nbgrader's own solution and hidden-test clearing."""
    nb = copy.deepcopy(nb)
    nb, _ = ClearSolutions(code_stub={"python": STUB}).preprocess(nb, {})
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    return nb


def build(src: Path) -> dict[Path, str]:
    """{output path: notebook text} for one solutions/NN_topic.py."""
    lesson = src.stem
    nb = mark_cells(clean(jupytext.read(src), lesson), lesson)
    return {
        ROOT / "solutions" / f"{lesson}.ipynb": nbformat.writes(nb) + "\n",
        ROOT / "lessons" / f"{lesson}.ipynb": nbformat.writes(student_version(nb)) + "\n",
    }


def sources() -> list[Path]:
    return sorted((ROOT / "solutions").glob("[0-9][0-9]_*.py"))


def lessons() -> list[str]:
    """The lessons a learner gets (and a grader grades): lessons/NN_topic.ipynb."""
    return sorted(p.stem for p in (ROOT / "lessons").glob("*.ipynb"))


def build_all(check_only: bool = False) -> list[Path]:
    """Write every generated notebook (or, with check_only, list those that are out of date)."""
    stale = []
    for src in sources():
        for path, text in build(src).items():
            if not path.exists() or path.read_text() != text:
                stale.append(path)
                if not check_only:
                    path.parent.mkdir(exist_ok=True)
                    path.write_text(text)
    return stale
