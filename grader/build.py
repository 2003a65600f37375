"""solutions/NN_topic.py (jupytext percent, nbgrader markers) -> lessons/NN_topic.ipynb + solutions/NN_topic.ipynb.

The pipeline is a short list of named steps; the student version is made by nbgrader's own ClearSolutions and
ClearHiddenTests preprocessors, so a real nbgrader course sees exactly the cells and metadata it expects.
"""
from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path

from grader.registry import exercises

# jupytext, nbformat and nbgrader are imported where they are used: they come with the course's own environment
# (the `course` extra), and an installed grader without it (Colab) still imports this module for ROOT and the
# cell rules.

ROOT = Path(__file__).resolve().parent.parent
CHECK_LINE = re.compile(r"^check\((\w+)\)$")
DEFINES = re.compile(r"^(?:def|class)\s+(\w+)", re.MULTILINE)
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

# Where a lesson opened outside the course's own environment (Google Colab, a plain Jupyter) installs torchdojo
# from: anything `pip install` takes, a git URL ("git+https://github.com/OWNER/torchdojo.git") or a wheel's URL.
# A learner's TORCHDOJO_SOURCE environment variable overrides it. A GitHub URL here also gives every lesson an
# "Open in Colab" link in the README. Empty while the course has no public home.
INSTALL_SOURCE = ""

INSTALL_CELL = f"""\
# Outside the course's own environment (Google Colab, say) this installs torchdojo: the grader and the data the
# lessons use. Where torchdojo is installed already it does nothing.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("grader") is None:
    source = os.environ.get("TORCHDOJO_SOURCE") or {INSTALL_SOURCE!r}
    if not source:
        raise RuntimeError("torchdojo is not installed here: set TORCHDOJO_SOURCE to a torchdojo wheel or git "
                           "URL, e.g. os.environ['TORCHDOJO_SOURCE'] = 'torchdojo-0.1.0-py3-none-any.whl'")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", source], check=True)
    importlib.invalidate_caches()"""


def _checked_names(source: str) -> list[str]:
    """The exercises a check cell checks; [] when the cell is not a check cell."""
    lines = [ln.strip() for ln in source.splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    matches = [CHECK_LINE.match(ln) for ln in lines]
    return [m.group(1) for m in matches] if lines and all(matches) else []


def add_install_cell(nb, lesson: str):
    """The cell that installs torchdojo where it is missing, before the lesson's first code cell."""
    import nbformat
    first = next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code")
    nb.cells.insert(first, nbformat.v4.new_code_cell(INSTALL_CELL))
    return nb


def cell_id(lesson: str, cell) -> str:
    """A teaching cell's id comes from its content: it stays when other cells change, and it shows whether a
    workspace copy of the cell was edited (see grader/workspace.py)."""
    return f"{lesson}-{hashlib.sha256((cell.cell_type + cell.source).encode()).hexdigest()[:10]}"


def clean(nb, lesson: str):
    """No outputs, no execution counts, no editor metadata; stable cell ids."""
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    seen: dict[str, int] = {}
    for cell in nb.cells:
        cell.metadata = {}
        base = cell_id(lesson, cell)
        seen[base] = seen.get(base, 0) + 1
        cell.id = base if seen[base] == 1 else f"{base}-{seen[base]}"  # the same text twice in a lesson
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
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions
    nb = copy.deepcopy(nb)
    nb, _ = ClearSolutions(code_stub={"python": STUB}).preprocess(nb, {})
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    return nb


def build(src: Path) -> dict[Path, str]:
    """{output path: notebook text} for one solutions/NN_topic.py."""
    import jupytext
    import nbformat
    lesson = src.stem
    nb = mark_cells(clean(add_install_cell(jupytext.read(src), lesson), lesson), lesson)
    return {
        ROOT / "solutions" / f"{lesson}.ipynb": nbformat.writes(nb) + "\n",
        ROOT / "lessons" / f"{lesson}.ipynb": nbformat.writes(student_version(nb)) + "\n",
    }


def sources() -> list[Path]:
    return sorted((ROOT / "solutions").glob("[0-9][0-9]_*.py"))


def colab_links(lesson_names: list[str], source: str = INSTALL_SOURCE) -> str:
    """The README's "Open in Colab" lines: one per lesson when the install source is a GitHub repository."""
    m = re.fullmatch(r"(?:\w+ @ )?git\+https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?(?:@([\w./-]+))?", source)
    if not m:
        return ("No public home is configured yet, so there are no Colab links: set `INSTALL_SOURCE` in "
                "`grader/build.py` to the course's GitHub URL and run `python -m grader build`.")
    repo, branch = m.group(1), m.group(2) or "main"
    return "\n".join(f"- [{name}](https://colab.research.google.com/github/{repo}/blob/{branch}/lessons/"
                     f"{name}.ipynb)" for name in lesson_names)


def course_contents(lesson_names: list[str]) -> str:
    """The README's table of lessons: each lesson's title (its first heading), exercises and points, and totals."""
    rows, known = [], exercises().values()
    for name in lesson_names:
        heading = (ROOT / "solutions" / f"{name}.py").read_text().split("\n# # ", 1)[1].split("\n", 1)[0]
        mine = [ex for ex in known if ex.lesson == name]
        rows.append(f"| `{name}` | {heading.split(' · ', 1)[-1]} | {len(mine)} | {sum(ex.points for ex in mine)} |")
    mine = [ex for ex in known if ex.lesson in lesson_names]
    return "\n".join(["| lesson | what it teaches | exercises | points |", "| --- | --- | --- | --- |", *rows,
                      f"| **{len(lesson_names)} lessons** | | **{len(mine)}** | **{sum(ex.points for ex in mine)}** |"])


README_BLOCKS = {"course contents": course_contents, "colab links": colab_links}  # name -> its text, from lessons


def readme(text: str, lesson_names: list[str]) -> str:
    """README.md with its generated blocks (between `<!-- NAME: written by ... -->` and `<!-- end of NAME -->`)
    brought up to date."""
    for name, make in README_BLOCKS.items():
        begin, end = f"<!-- {name}: written by python -m grader build -->", f"<!-- end of {name} -->"
        head, _, rest = text.partition(begin)
        _, found, tail = rest.partition(end)
        if not found:
            raise ValueError(f"README.md has no {begin} ... {end} block")
        text = f"{head}{begin}\n{make(lesson_names)}\n{end}{tail}"
    return text


def build_all(check_only: bool = False) -> list[Path]:
    """Write every generated notebook and the README's generated blocks (or, with check_only, list what is out of
    date)."""
    stale = []
    generated = {path: text for src in sources() for path, text in build(src).items()}
    generated[ROOT / "README.md"] = readme((ROOT / "README.md").read_text(), [src.stem for src in sources()])
    for path, text in generated.items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not check_only:
                path.parent.mkdir(exist_ok=True)
                path.write_text(text)
    return stale
