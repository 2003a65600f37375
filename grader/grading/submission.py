"""What is graded: the source lesson's cells, with only the answer cells taken from a submission.

A submission contributes one code cell per exercise: the cell whose id (or nbgrader grade_id) is
"<name>-answer", else the last cell that defines `name` at top level. Everything else — imports, teaching
code, check cells — comes from lessons/NN_topic.ipynb, so edited, deleted or duplicated cells change nothing.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from grader.build import ROOT, _checked_names
from grader.registry import exercises


@dataclass
class Answer:
    name: str                 # the exercise
    source: str               # the cell's code (the lesson's stub when the submission has none)
    found: str                # "id", "definition" or "missing"
    note: str = ""            # what the learner should know about how the cell was picked


@dataclass
class Submission:
    student: str
    path: Path
    digest: str                               # sha256 of the file's bytes
    answers: list[Answer] = field(default_factory=list)
    problem: str = ""                         # why nothing could be read ("" when readable)


def cell_source(cell: dict) -> str:
    src = cell.get("source", cell.get("input", ""))
    if isinstance(src, list):
        src = "".join(s for s in src if isinstance(s, str))
    return src if isinstance(src, str) else ""


def read_cells(data: bytes) -> list[dict]:
    """The cells of a notebook file (nbformat 4, or 3's worksheets); ValueError when unreadable."""
    if not data.strip():
        raise ValueError("the notebook file is empty")
    try:
        nb = json.loads(data.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as e:
        raise ValueError(f"the file is not a notebook: it is not valid JSON (line {e.lineno}, column {e.colno}) — "
                         "submit the .ipynb file as Jupyter saved it (File → Download)") from None
    if not isinstance(nb, dict):
        raise ValueError("the notebook is not a JSON object")
    cells = nb.get("cells")
    if cells is None and isinstance(nb.get("worksheets"), list) and nb["worksheets"]:
        cells = nb["worksheets"][0].get("cells") if isinstance(nb["worksheets"][0], dict) else None
    if not isinstance(cells, list):
        raise ValueError("the notebook has no list of cells")
    return [c for c in cells if isinstance(c, dict)]


def _grade_id(cell: dict) -> str | None:
    meta = cell.get("metadata")
    nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
    gid = nbg.get("grade_id") if isinstance(nbg, dict) else None
    return gid if isinstance(gid, str) else None


def defines(source: str, name: str) -> bool:
    """True when the code defines `name` at top level (def, class or assignment)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return re.search(rf"^(?:def|class)\s+{re.escape(name)}\b", source, re.MULTILINE) is not None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
    return False


def answer_cells(cells: list[dict], name: str) -> tuple[list[dict], str]:
    """The cells that answer exercise `name`, the last of which is graded, and how they were found: "id" (the cell
    id or nbgrader grade_id is "<name>-answer"), else "definition" (code cells defining `name`), else "missing"."""
    code = [c for c in cells if c.get("cell_type") == "code"]
    tagged = [c for c in code if f"{name}-answer" in (c.get("id"), _grade_id(c))]
    if tagged:
        return tagged, "id"
    defining = [c for c in code if defines(cell_source(c), name)]
    return defining, "definition" if defining else "missing"


@dataclass
class Lesson:
    """The source lesson: its teaching cells (run once per batch) and its exercises in order."""
    name: str
    path: Path
    teaching: list[str]                 # code of every code cell that is neither an answer nor a check cell
    stubs: dict[str, str]               # exercise -> the lesson's own answer cell (the stub)
    exercises: list[str]                # in notebook order
    digest: str

    @classmethod
    def load(cls, name: str, lessons_dir: Path | None = None) -> "Lesson":
        import hashlib
        path = (lessons_dir or ROOT / "lessons") / f"{name}.ipynb"
        data = path.read_bytes()
        known = {n for n, ex in exercises().items() if ex.lesson == name}
        teaching, stubs = [], {}
        for cell in read_cells(data):
            if cell.get("cell_type") != "code":
                continue
            src = cell_source(cell)
            gid = _grade_id(cell) or cell.get("id") or ""
            if gid.endswith("-answer") and gid.removesuffix("-answer") in known:
                stubs[gid.removesuffix("-answer")] = src
            elif gid.endswith("-check") or _checked_names(src):
                continue
            else:
                teaching.append(src)
        missing = known - set(stubs)
        if missing:
            raise ValueError(f"{path}: no answer cell for {sorted(missing)}")
        return cls(name, path, teaching, stubs, list(stubs), hashlib.sha256(data).hexdigest())

    def answers(self, data: bytes) -> tuple[list[Answer], str, str]:
        """The submission's answer for each exercise (or the stub), its status (`graded`, or `unreadable` /
        `no_cells` when there is nothing to grade) and, if there is nothing to grade, why."""
        stubs = [Answer(n, self.stubs[n], "missing", "") for n in self.exercises]
        try:
            cells = read_cells(data)
        except ValueError as e:
            return stubs, "unreadable", f"the notebook could not be read: {e}"
        if not cells:
            return stubs, "no_cells", ("the notebook has no cells — was it saved before it was submitted? Submit "
                                       f"the notebook {self.name}.ipynb with your answers")
        out = []
        for name in self.exercises:
            found, how = answer_cells(cells, name)
            if how == "id":
                note = f"{len(found)} cells carry the id {name}-answer; the last one was graded"
                out.append(Answer(name, cell_source(found[-1]), how, note if len(found) > 1 else ""))
            elif how == "definition":
                out.append(Answer(name, cell_source(found[-1]), how,
                                  f"no cell with the id {name}-answer: graded the last cell that defines {name}"))
            else:
                out.append(Answer(name, self.stubs[name], how,
                                  f"no answer cell for {name} was found in the submission"))
        return out, "graded", ""
