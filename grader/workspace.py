"""The learner's workspace: their own copies of the lessons, which building, testing and updating the course never
overwrite.

`python -m grader update` copies new lessons in and merges a course update into the notebooks already there: the
learner's cells (answers, cells they added, teaching cells they edited) are kept, everything else comes from the
new lesson, and the old file is backed up first. Whose cell is whose follows from the build's cell ids:
"<name>-answer" and "<name>-check" for exercises and, for teaching cells, an id derived from the text
(grader.build.cell_id), so a teaching cell whose text no longer matches its id was edited by the learner.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import nbformat
import nbformat.reader
from nbformat.v4.nbbase import random_cell_id

from grader.build import ROOT, cell_id
from grader.grading.outputs import atomic_write
from grader.grading.submission import _grade_id, answer_cells

BACKUPS = ".backups"
COURSE_KEYS = ("nbgrader", "editable", "deletable")  # cell metadata the course owns; any other key is the learner's
AGAIN = "run `python -m grader update` again"


def workspace_dir() -> Path:
    """$TORCHDOJO_WORKSPACE if set, else workspace/ inside the course (git-ignored)."""
    env = os.environ.get("TORCHDOJO_WORKSPACE", "").strip()
    return Path(env).expanduser() if env else ROOT / "workspace"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _stubs(lesson) -> dict[str, str]:
    """{exercise: digest of its answer stub} for a lesson as the course ships it."""
    return {c.id.removesuffix("-answer"): _digest(c.source) for c in lesson.cells
            if c.cell_type == "code" and c.id.endswith("-answer")}


def _removed_mark(name: str) -> str:
    return f"# The exercise {name} is no longer in this lesson: your code is kept here, and it is not graded.\n"


def _answer_tag(cell) -> str | None:
    """The exercise a code cell is tagged as the answer of (nbgrader grade_id, else cell id), if any."""
    tag = _grade_id(cell) or cell.id
    return tag.removesuffix("-answer") if cell.cell_type == "code" and tag.endswith("-answer") else None


def _adopt(course, old, source: str | None = None):
    """The new lesson's cell carrying what the learner's copy adds: their text (for an answer), their own metadata,
    and the outputs where the text is unchanged."""
    cell = copy.deepcopy(course)
    cell.metadata = nbformat.from_dict({**{k: v for k, v in old.metadata.items() if k not in COURSE_KEYS},
                                        **copy.deepcopy(course.metadata)})
    if source is not None:
        cell.source = source
    if cell.cell_type == "code" and old.cell_type == "code" and cell.source == old.source:
        cell.outputs, cell.execution_count = copy.deepcopy(old.outputs), old.execution_count
    return cell


def _untag(cell):
    """A learner's cell never carries a grading tag: which cell is graded stays the course's answer cell."""
    cell = copy.deepcopy(cell)
    cell.metadata.pop("nbgrader", None)
    return cell


def merge(old, new, lesson: str):
    """The new lesson with the learner's cells of their notebook `old` kept in it, and counts of what happened."""
    course_id = re.compile(rf"({re.escape(lesson)}-[0-9a-f]{{10}})(?:-\d+)?")  # a teaching cell's id
    by_id = {c.id: c for c in new.cells}
    exercises = list(_stubs(new))
    meta = old.metadata.get("torchdojo")
    given = meta.get("stubs", {}) if isinstance(meta, dict) and isinstance(meta.get("stubs"), dict) else {}

    def untouched(source: str, name: str) -> bool:  # still the stub the learner was given (or the new one)
        return _digest(source) == given.get(name) or source == getattr(by_id.get(f"{name}-answer"), "source", None)

    chosen = {}  # id(old cell) -> the exercise it answers
    for name in exercises:
        found, _ = answer_cells(old.cells, name)  # picked as the batch grader picks the graded cell
        if found:
            chosen[id(found[-1])] = name
    merged = {c.id: copy.deepcopy(c) for c in new.cells}  # the new lesson, where the learner's cells replace some
    after = defaultdict(list)  # id of a merged cell (None: the top) -> learner's cells that follow it, in order
    anchor, counts, old_course = None, Counter(), set()
    for cell in old.cells:
        tag = _answer_tag(cell)
        edited = (m := course_id.fullmatch(cell.id)) is not None and m.group(1) != cell_id(lesson, cell)
        if id(cell) in chosen:
            name = chosen[id(cell)]
            if untouched(cell.source, name):
                merged[f"{name}-answer"] = _adopt(by_id[f"{name}-answer"], cell)
                old_course.add((cell.id, cell.source))
            else:
                source = cell.source.removeprefix(_removed_mark(name))  # an exercise that came back
                merged[f"{name}-answer"] = _adopt(by_id[f"{name}-answer"], cell, source)
                counts["answers"] += 1
            anchor = f"{name}-answer"
        elif tag is not None and tag not in exercises and _digest(cell.source) == given.get(tag):
            old_course.add((cell.id, cell.source))  # the untouched stub of a removed exercise goes with it
        elif tag is not None and tag not in exercises:
            cell = _untag(cell)
            if not cell.source.startswith(_removed_mark(tag)):
                cell.source = _removed_mark(tag) + cell.source
                counts["removed"] += 1
            else:
                counts["own"] += 1
            after[anchor].append(cell)
        elif (cell.id.endswith("-check") and tag is None) or (m and not edited):  # the course's own cells
            old_course.add((cell.id, cell.source))
            if cell.id in by_id:
                merged[cell.id] = _adopt(by_id[cell.id], cell)
                anchor = cell.id
        elif edited and cell.id in by_id:  # a teaching cell the learner edited, and the course did not: theirs
            merged[cell.id] = copy.deepcopy(cell)
            counts["edited"] += 1
            anchor = cell.id
        else:  # a cell the learner added, a copy of an answer, or an edited teaching cell the course changed
            after[anchor].append(_untag(cell))
            counts["edited" if edited else "own"] += 1

    course = [merged[c.id] for c in new.cells]
    taken = {c.id for c in course}
    for cells in after.values():
        for cell in cells:  # a learner's cell never takes an id the course uses (a copy of an answer cell, say)
            base, n = cell.id[:50], 1
            while cell.id in taken:
                cell.id, n = f"{base}-copy" + (f"-{n}" if n > 1 else ""), n + 1
            taken.add(cell.id)
    out = copy.deepcopy(new)
    out.cells = after[None] + [cell for c in course for cell in [c, *after[c.id]]]
    out.metadata = copy.deepcopy(old.metadata)
    out.metadata["torchdojo"] = {"stubs": _stubs(new)}
    new_course = {(c.id, c.source) for c in course if c.source == by_id[c.id].source}
    counts["course new"] = len(new_course - old_course)
    counts["course removed"] = len({i for i, _ in old_course} - taken)
    return out, counts


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _summary(counts: Counter) -> str:
    parts = [(counts["answers"], "answer kept", "answers kept"),
             (counts["own"], "of your own cells kept", "of your own cells kept"),
             (counts["edited"], "course cell you edited kept", "course cells you edited kept"),
             (counts["removed"], "answer of a removed exercise kept (marked)",
              "answers of removed exercises kept (marked)"),
             (counts["course new"], "course cell new or changed", "course cells new or changed"),
             (counts["course removed"], "course cell removed", "course cells removed")]
    return ", ".join(_plural(n, one, many) for n, one, many in parts if n)


def _read(path: Path):
    """The workspace notebook's bytes and contents; ValueError saying why it cannot be merged."""
    data = path.read_bytes()
    if re.search(rb"^(<<<<<<<|>>>>>>>) ", data, re.MULTILINE):
        raise ValueError("it has git merge-conflict markers, <<<<<<< and >>>>>>>")
    try:
        text = data.decode("utf-8")
        raw = json.loads(text)
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"it is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        raise ValueError("it is not a Jupyter notebook")
    if raw.get("nbformat") != 4:
        raise ValueError(f"it is in notebook format {raw.get('nbformat')}, and only format 4 can be updated")
    try:
        nb = nbformat.reader.reads(text)
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        raise ValueError(f"it is not a valid notebook: {e.message}") from None
    for cell in nb.cells:  # format 4.4 and older has no cell ids: such cells count as the learner's
        cell.setdefault("id", random_cell_id())
    return data, nb


def _backup(data: bytes, path: Path, workspace: Path) -> Path:
    """A copy of the notebook as it was, in the workspace's hidden backup folder, never over an earlier one."""
    folder = workspace / BACKUPS
    folder.mkdir(exist_ok=True)
    stamp, n = datetime.now().strftime("%Y%m%d-%H%M%S"), 1
    while True:
        target = folder / f"{path.stem}-{stamp}{f'-{n}' if n > 1 else ''}.ipynb"
        try:
            with open(target, "xb") as f:  # x: fails rather than overwrite
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return target
        except FileExistsError:
            n += 1


def _same(a, b) -> bool:
    key = lambda nb: (nb.metadata, [(c.id, c.cell_type, c.source, c.metadata) for c in nb.cells])  # noqa: E731
    return key(a) == key(b)


def _from_course(path: Path) -> bool:
    """Whether a workspace notebook was once a lesson copied in by an update (the learner's own ones were not)."""
    try:
        return "torchdojo" in json.loads(path.read_bytes()).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return False


def _update(workspace: Path, lessons_dir: Path) -> list[tuple[str, bool]]:
    """(line, whether it went well) for each lesson and each lesson notebook the course no longer has."""
    sources = sorted(lessons_dir.glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no lessons in {lessons_dir}: run this inside the torchdojo repository")
    workspace.mkdir(parents=True, exist_ok=True)
    lines = []
    for src in sources:
        new, path, lesson = nbformat.read(src, as_version=4), workspace / src.name, src.stem
        if not path.exists():
            new.metadata["torchdojo"] = {"stubs": _stubs(new)}
            atomic_write(path, nbformat.writes(new) + "\n")
            lines.append((f"added {lesson}", True))
            continue
        try:
            data, old = _read(path)
        except (OSError, ValueError) as e:
            lines.append((f"{path.name} could not be read ({e}): left as it was — fix it, or rename it and "
                          f"{AGAIN} for a fresh copy", False))
            continue
        merged, counts = merge(old, new, lesson)
        try:
            nbformat.validate(merged)
        except nbformat.ValidationError as e:  # a cell of the learner's that the new lesson's format rejects
            lines.append((f"{path.name} could not be updated ({e.message}): left as it was — rename it and "
                          f"{AGAIN} for a fresh copy, then bring your answers over", False))
            continue
        if _same(old, merged):
            lines.append((f"{lesson}: up to date", True))
            continue
        backup = _backup(data, path, workspace)
        atomic_write(path, nbformat.writes(merged) + "\n")
        done = _summary(counts)
        lines.append((f"{lesson}: updated{' — ' + done if done else ''}; backup: "
                      f"{backup.relative_to(workspace)}", True))
    for path in sorted(workspace.glob("*.ipynb")):
        if not (lessons_dir / path.name).exists() and _from_course(path):
            lines.append((f"{path.stem}: no longer in the course — your notebook is left as it is", True))
    return lines


def update(workspace: Path | None = None, lessons_dir: Path = ROOT / "lessons") -> list[str]:
    """Bring the workspace up to date with the lessons: new lessons copied in, updated ones merged (the learner's
    cells kept, a backup first), unreadable ones left alone; one line per lesson says what happened."""
    return [line for line, _ in _update(workspace or workspace_dir(), lessons_dir)]


def update_command(args) -> int:
    """`python -m grader update`: 0, or 1 when a notebook could not be updated (it is reported and left as it was)."""
    workspace = workspace_dir().resolve()
    try:
        lines = _update(workspace, ROOT / "lessons")
    except FileNotFoundError as e:
        print(f"python -m grader update: {e}", file=sys.stderr)
        return 1
    for line, _ in lines:
        print(line)
    print(f"your workspace: {workspace}\nopen it with `bash dojo course`, or `jupyter lab --notebook-dir={workspace}`")
    if not all(ok for _, ok in lines):
        print("some notebooks were left as they were (see above); nothing of yours was overwritten", file=sys.stderr)
        return 1
    return 0
