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

from grader.build import ROOT, _checked_names, cell_id
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
    """A learner's cell never carries a grading tag or a lock: which cell is graded stays the course's answer cell."""
    cell = copy.deepcopy(cell)
    for key in COURSE_KEYS:
        cell.metadata.pop(key, None)
    return cell


def _record(new, lesson: str) -> dict:
    """What the workspace copy remembers of the lesson it came from: its name, each answer stub's digest (an answer
    still equal to it is untouched) and its cell ids (to recognise course cells saved without ids)."""
    return {"lesson": lesson, "stubs": _stubs(new), "cells": [c.id for c in new.cells]}


def _restore_ids(old, lesson: str, known: set[str]) -> None:
    """Cells that lost their course id get it back: saved without ids (notebook format 4.4 and older, e.g. from
    Colab), or given random ones when an editor upgraded the format. An answer or check cell gets it from its
    nbgrader grade_id, a teaching cell when its text is a course cell's; only ids no other cell has are given
    (a pasted copy stays the learner's). A cell without an id otherwise gets a random one: it is the learner's."""
    used = {c.get("id") for c in old.cells}
    seen = Counter()
    for cell in old.cells:
        base = cell_id(lesson, cell)
        seen[base] += 1
        if cell.get("id") in known or (cell.get("id") or "").endswith(("-answer", "-check")):
            continue
        candidate = _grade_id(cell) or (base if seen[base] == 1 else f"{base}-{seen[base]}")
        if candidate not in used and (candidate in known or candidate == _grade_id(cell)):
            used.add(candidate)
            cell.id = candidate
        elif not cell.get("id"):
            cell.id = random_cell_id()


def merge(old, new, lesson: str):
    """The new lesson with the learner's cells of their notebook `old` kept in it, and what happened (counts, and
    the names of the exercises concerned)."""
    course_id = re.compile(rf"({re.escape(lesson)}-[0-9a-f]{{10}})(?:-\d+)?")  # a teaching cell's id
    by_id = {c.id: c for c in new.cells}
    exercises = list(_stubs(new))
    record = old.metadata.get("torchdojo")
    record = record if isinstance(record, dict) else {}
    given = record.get("stubs") if isinstance(record.get("stubs"), dict) else {}
    old = copy.deepcopy(old)
    _restore_ids(old, lesson, set(by_id) | set(record.get("cells") or []))

    def untouched(source: str, name: str) -> bool:  # still the stub the learner was given (or the new one)
        return _digest(source) == given.get(name) or source == getattr(by_id.get(f"{name}-answer"), "source", None)

    # The cell graded as each exercise's answer, picked as the batch grader picks it. A tagged cell belongs to its
    # tag; an exercise found only by its definition inside another exercise's cell keeps it there, and its stub
    # does not come back (it would be graded instead of the learner's code).
    chosen, shared = {}, set()
    for by_tag in (True, False):
        for name in exercises:
            found, how = answer_cells(old.cells, name)
            if found and (how == "id") == by_tag:
                if id(found[-1]) in chosen:
                    shared.add(name)
                else:
                    chosen[id(found[-1])] = name

    merged = {c.id: copy.deepcopy(c) for c in new.cells if c.id.removesuffix("-answer") not in shared}
    items = []  # the old notebook, in order: ("course", merged id) | ("gone", None) | ("extra", learner's cell)
    counts, names, old_course = Counter(), defaultdict(list), set()
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
                if given.get(name) not in (None, _digest(by_id[f"{name}-answer"].source)):
                    names["restated"].append(name)  # the course changed the stub of an answered exercise
            items.append(("course", f"{name}-answer"))
        elif tag is not None and tag not in exercises and _digest(cell.source) == given.get(tag):
            old_course.add((cell.id, cell.source))  # the untouched stub of a removed exercise goes with it
            items.append(("gone", None))
        elif tag is not None and tag not in exercises:
            cell = _untag(cell)
            if not cell.source.startswith(_removed_mark(tag)):
                cell.source = _removed_mark(tag) + cell.source
                names["removed"].append(tag)
            else:
                counts["own"] += 1
            items.append(("extra", cell))
        elif cell.id.endswith("-check") and tag is None:  # a check cell: always the course's
            old_course.add((cell.id, cell.source))
            course = by_id.get(cell.id)
            if course is not None:
                merged[cell.id] = _adopt(course, cell)
                items.append(("course", cell.id))
            if cell.source.strip() != getattr(course, "source", "").strip() and not _checked_names(cell.source):
                items.append(("extra", _untag(cell)))  # the learner unlocked it and wrote in it: theirs
                counts["check edited"] += 1
            elif course is None:
                items.append(("gone", None))
        elif m and not edited:  # a teaching cell as the course wrote it
            old_course.add((cell.id, cell.source))
            if cell.id in by_id:
                merged[cell.id] = _adopt(by_id[cell.id], cell)
            items.append(("course", cell.id) if cell.id in by_id else ("gone", None))
        elif edited and cell.id in by_id:  # a teaching cell the learner edited, and the course did not: theirs
            merged[cell.id] = copy.deepcopy(cell)
            counts["edited"] += 1
            items.append(("course", cell.id))
        else:  # a cell the learner added, a copy of an answer, or an edited teaching cell the course changed
            items.append(("extra", _untag(cell)))
            counts["edited" if edited else "own"] += 1

    # The learner's cells go after the course cell they followed; where that one is gone (changed or removed),
    # before the next course cell that is still there, so a note stays in its section.
    after, before = defaultdict(list), defaultdict(list)
    last = None  # the latest course cell still there
    i = 0
    while i < len(items):
        if items[i][0] != "extra":
            last = items[i][1] if items[i][0] == "course" else last
            i += 1
            continue
        j = i
        while j < len(items) and items[j][0] == "extra":
            j += 1
        run = [cell for _, cell in items[i:j]]
        follows_gone = i > 0 and items[i - 1][0] == "gone"
        following = next((key for kind, key in items[j:] if kind == "course"), None)
        if follows_gone and following is not None:
            before[following] += run
        else:
            after[last] += run
        i = j

    course = [merged[c.id] for c in new.cells if c.id in merged]
    taken = {c.id for c in course}
    for cell in [c for cells in (*after.values(), *before.values()) for c in cells]:
        base, n = cell.id[:50], 1  # a learner's cell never takes an id the course uses (a copy of an answer cell)
        while cell.id in taken:
            cell.id, n = f"{base}-copy" + (f"-{n}" if n > 1 else ""), n + 1
        taken.add(cell.id)
    out = copy.deepcopy(new)
    out.cells = after[None] + [cell for c in course for cell in [*before[c.id], c, *after[c.id]]]
    out.metadata = copy.deepcopy(old.metadata)
    out.metadata["torchdojo"] = _record(new, lesson)
    new_course = {(c.id, c.source) for c in course if c.source == by_id[c.id].source}
    counts["course new"] = len(new_course - old_course)
    counts["course removed"] = len({i for i, _ in old_course} - taken)
    return out, counts, names


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _summary(counts: Counter, names: dict[str, list[str]]) -> str:
    parts = [_plural(n, one, many) for n, one, many in [
        (counts["answers"], "answer kept", "answers kept"),
        (counts["own"], "of your own cells kept", "of your own cells kept"),
        (counts["edited"], "course cell you edited kept", "course cells you edited kept"),
        (counts["check edited"], "check cell you wrote in kept below the course's",
         "check cells you wrote in kept below the course's"),
        (counts["course new"], "course cell new or changed", "course cells new or changed"),
        (counts["course removed"], "course cell removed", "course cells removed")] if n]
    parts = [", ".join(parts)] if parts else []
    if names["removed"]:
        parts.append(f"your answer to {', '.join(names['removed'])} kept and marked: the exercise is no longer "
                     "in this lesson")
    if names["restated"]:
        parts.append(f"the task of {', '.join(names['restated'])} changed: read it again and compare your answer")
    return "; ".join(parts)


def _read(path: Path):
    """The workspace notebook's bytes and contents; ValueError saying why it cannot be merged."""
    data = path.read_bytes()
    if not data.strip():
        raise ValueError("the file is empty")
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
        raise ValueError(f"it is not a valid notebook: {_short(e.message)}") from None
    return data, nb


def _short(message: str) -> str:
    """A validation message's first line, cut short (it can quote a whole cell)."""
    line = (message.splitlines() or [""])[0]
    return line if len(line) <= 160 else line[:157] + "..."


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
    key = lambda nb: (nb.metadata, [(c.get("id"), c.cell_type, c.source, c.metadata) for c in nb.cells])  # noqa: E731
    return key(a) == key(b)


def _former_lesson(path: Path) -> bool:
    """Whether a workspace notebook is the copy of a lesson, under that lesson's name (not the learner's own
    notebook, nor a copy they renamed)."""
    record = _record_of(path)
    return bool(record) and record.get("lesson", path.stem) == path.stem


def copies_of(lesson: str, workspace: Path) -> list[Path]:
    """The workspace notebooks that hold the learner's copy of `lesson` under another name (renamed, duplicated)."""
    return [path for path in sorted(workspace.glob("*.ipynb"))
            if path.stem != lesson and _record_of(path).get("lesson") == lesson]


def _record_of(path: Path) -> dict:
    """The torchdojo record in a workspace notebook's metadata ({} when it has none or cannot be read)."""
    try:
        record = json.loads(path.read_bytes()).get("metadata", {}).get("torchdojo")
    except (OSError, ValueError, AttributeError):
        return {}
    return record if isinstance(record, dict) else {}


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
            new.metadata["torchdojo"] = _record(new, lesson)
            atomic_write(path, nbformat.writes(new) + "\n")
            copies = copies_of(lesson, workspace)
            note = (f" — your copy {copies[0].name} is left as it is, but only {path.name} is graded: bring your "
                    "answers over") if copies else ""
            lines.append((f"added {lesson}{note}", True))
            continue
        try:
            data, old = _read(path)
        except (OSError, ValueError) as e:
            lines.append((f"{path.name} could not be read ({e}): left as it was — fix it, or rename it and "
                          f"{AGAIN} for a fresh copy", False))
            continue
        merged, counts, names = merge(old, new, lesson)
        try:
            nbformat.validate(merged)
        except nbformat.ValidationError as e:  # a cell of the learner's that the new lesson's format rejects
            lines.append((f"{path.name} could not be updated ({e.message}): left as it was — rename it and "
                          f"{AGAIN} for a fresh copy, then bring your answers over", False))
            continue
        if _same(old, merged):
            lines.append((f"{lesson}: up to date", True))
            continue
        try:
            backup = _backup(data, path, workspace)
            atomic_write(path, nbformat.writes(merged) + "\n")
        except OSError as e:  # the backup comes first: without one the notebook is not written
            lines.append((f"{path.name} could not be updated ({e.strerror}: {e.filename}): left as it was — make "
                          f"room or fix the permissions, then {AGAIN}", False))
            continue
        done = _summary(counts, names)
        lines.append((f"{lesson}: updated{' — ' + done if done else ''}; backup: "
                      f"{backup.relative_to(workspace)}", True))
    for path in sorted(workspace.glob("*.ipynb")):
        if not (lessons_dir / path.name).exists() and _former_lesson(path):
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
    except OSError as e:  # the workspace cannot be made (TORCHDOJO_WORKSPACE names a file, no permission)
        print(f"python -m grader update: the workspace {workspace} cannot be used ({e.strerror}) — point "
              "TORCHDOJO_WORKSPACE at a folder you can write to", file=sys.stderr)
        return 1
    for line, _ in lines:
        print(line)
    print(f"your workspace: {workspace}\nopen it with `bash dojo course`, or `jupyter lab --notebook-dir={workspace}`")
    if not all(ok for _, ok in lines):
        print("some notebooks were left as they were (see above); nothing of yours was overwritten", file=sys.stderr)
        return 1
    return 0
