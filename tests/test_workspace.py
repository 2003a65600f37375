"""The learner's workspace: `python -m grader update` copies the lessons in, and merges a course update into them
keeping every answer and every cell the learner added, with a backup first."""
import copy
import json
import os
import shutil
import subprocess
import sys

import nbformat
import pytest

from grader.build import ROOT, cell_id, clean
from grader.grading.submission import Lesson
from grader.workspace import update, workspace_dir


# --- a small course, with ids made the way the build makes them ---------------------------------------------------

def stub(name: str, line: str = "") -> str:
    return f"def {name}(x):\n    {line or '# YOUR CODE HERE'}\n    raise NotImplementedError()"


def lesson(name: str, *cells) -> nbformat.NotebookNode:
    """A lesson notebook from ("md", text), ("code", text), ("answer", exercise, stub) and ("check", exercise)."""
    made = []
    for kind, *rest in cells:
        if kind == "md":
            made.append(nbformat.v4.new_markdown_cell(rest[0]))
        elif kind == "code":
            made.append(nbformat.v4.new_code_cell(rest[0]))
        elif kind == "answer":
            made.append(nbformat.v4.new_code_cell(rest[1]))
        else:
            made.append(nbformat.v4.new_code_cell(f"check({rest[0]})"))
    nb = clean(nbformat.v4.new_notebook(cells=made), name)  # the build's own content-derived ids
    for cell, (kind, *rest) in zip(nb.cells, cells):
        if kind == "answer":
            cell.id = f"{rest[0]}-answer"
            cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False,
                                         "grade_id": f"{rest[0]}-answer", "schema_version": 3}
        elif kind == "check":
            cell.id = f"{rest[0]}-check"
            cell.metadata.update(editable=False, deletable=False, nbgrader={
                "grade": True, "solution": False, "locked": True, "grade_id": f"{rest[0]}-check",
                "schema_version": 3, "points": 1})
    return nb


def write(path, nb):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nbformat.writes(nb) + "\n")


def read(path):
    return nbformat.read(path, as_version=4)


def find(nb, cell_id_):
    return next(c for c in nb.cells if c.id == cell_id_)


def ids(nb):
    return [c.id for c in nb.cells]


def learner_cell(source: str, cell_id_: str, **metadata):
    """A cell as JupyterLab makes it when the learner adds one (its own id, outputs once run)."""
    cell = nbformat.v4.new_code_cell(source, metadata=metadata)
    cell.id = cell_id_
    cell.execution_count = 7
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    return cell


def files(folder):
    """Every file under folder, with its bytes and modification time."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


V1_CELLS = (("md", "# Lesson"),
            ("code", "import torch"),
            ("md", "## Part 1"),
            ("code", "print(1)"),
            ("md", "## Exercise f"),
            ("answer", "f", stub("f")),
            ("check", "f"),
            ("md", "## Part 2"),
            ("code", "print(2)"),
            ("md", "## Exercise g"),
            ("answer", "g", stub("g")),
            ("check", "g"),
            ("md", "## The end"))
V1 = lesson("01_x", *V1_CELLS)


def merged_with(tmp_path, old, new, name="01_x"):
    """Update a workspace holding `old` to the lesson `new`; (update's lines, the notebook after)."""
    lessons, workspace = tmp_path / "lessons", tmp_path / "ws"
    write(lessons / f"{name}.ipynb", new)
    write(workspace / f"{name}.ipynb", old)
    lines = update(workspace, lessons)
    return lines, read(workspace / f"{name}.ipynb")


def created(tmp_path, nb, name="01_x"):
    """A lesson copied into a fresh workspace by update, as a learner first gets it."""
    write(tmp_path / "v1" / f"{name}.ipynb", nb)
    assert update(tmp_path / "ws", tmp_path / "v1") == [f"added {name}"]
    return read(tmp_path / "ws" / f"{name}.ipynb")


# --- the "Done when": a real git pull of a course update -----------------------------------------------

def git(*args, cwd):
    env = dict(os.environ, GIT_AUTHOR_NAME="course", GIT_AUTHOR_EMAIL="course@example.org",
               GIT_COMMITTER_NAME="course", GIT_COMMITTER_EMAIL="course@example.org", GIT_CONFIG_NOSYSTEM="1",
               GIT_CONFIG_GLOBAL=os.devnull)
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def test_a_course_update_pulled_with_git_keeps_every_answer_and_brings_the_new_lessons(tmp_path):
    upstream, clone = tmp_path / "upstream", tmp_path / "clone"
    shutil.copytree(ROOT / "lessons", upstream / "lessons")
    git("init", "-q", "-b", "main", cwd=upstream)
    git("add", "lessons", cwd=upstream)
    git("commit", "-q", "-m", "the course", cwd=upstream)
    git("clone", "-q", str(upstream), str(clone), cwd=tmp_path)
    workspace = workspace_dir()  # TORCHDOJO_WORKSPACE, in tmp_path (conftest)
    assert workspace.is_relative_to(tmp_path)
    lines = update(workspace, clone / "lessons")
    assert lines == [f"added {p.stem}" for p in sorted((ROOT / "lessons").glob("*.ipynb"))]

    # The learner works in 01_tensors and 07_training and saves.
    path = workspace / "01_tensors.ipynb"
    nb = read(path)
    solutions = read(ROOT / "solutions" / "01_tensors.ipynb")
    correct = find(solutions, "broadcast_shape-answer").source  # a correct answer
    answer = find(nb, "broadcast_shape-answer")
    answer.source, answer.execution_count = correct, 3
    answer.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    find(nb, "normalize-answer").source = "def normalize(x, dim=-1, eps=1e-12):\n    return x  # my try"
    find(nb, "causal_mask-answer").source = "def causal_mask(n, device=None):\n    return 'mine'"
    by_text = lambda start: next(c.id for c in nb.cells if c.source.startswith(start))  # noqa: E731
    first_print = by_text("print(torch.tensor([[1, 2], [3, 4]]))")  # a teaching cell the course keeps as it is
    nb.cells.insert(ids(nb).index(first_print) + 1, learner_cell("print('my notes')", "mynotes1"))
    find(nb, first_print).source += "\nprint('edited by me')"
    broadcasting = by_text("## 7. Broadcasting")  # a teaching cell the learner edits and the course changes too
    find(nb, broadcasting).source += "\n\nMy note: shapes align on the right."
    write(path, nb)
    old_bytes = path.read_bytes()
    write(workspace / "07_training.ipynb", read(workspace / "07_training.ipynb"))  # saved: the learner's work
    training = (workspace / "07_training.ipynb").read_bytes()

    # The course changes: a stub, teaching cells changed, added and removed, an exercise and a lesson removed, a
    # lesson added.
    course = upstream / "lessons" / "01_tensors.ipynb"
    new = read(course)
    find(new, "one_hot-answer").source = find(new, "one_hot-answer").source.replace(
        "# YOUR CODE HERE", "# YOUR CODE HERE (torch.zeros, then scatter_)")
    find(new, "normalize-answer").source += "  # changed"
    changed = find(new, broadcasting)
    changed.source = changed.source.replace("## 7. Broadcasting", "## 7. Broadcasting, revised")
    changed.id = cell_id("01_tensors", changed)
    added = nbformat.v4.new_markdown_cell("A new paragraph of the course.")
    added.id = cell_id("01_tensors", added)
    new.cells.insert(ids(new).index(first_print) + 1, added)
    gone = by_text("### Default dtypes, and a trap in `torch.Tensor`")
    new.cells = [c for c in new.cells if c.id not in (gone, by_text("## Exercise: `causal_mask`"),
                                                       "causal_mask-answer", "causal_mask-check")]
    write(course, new)
    write(upstream / "lessons" / "99_extra.ipynb", lesson("99_extra", ("md", "# CNNs"), ("code", "import torch")))
    git("rm", "-q", "lessons/07_training.ipynb", cwd=upstream)
    git("add", "lessons", cwd=upstream)
    git("commit", "-q", "-m", "course update", cwd=upstream)

    git("pull", "-q", "--ff-only", cwd=clone)
    assert (clone / "lessons" / "99_extra.ipynb").exists() and not (clone / "lessons" / "07_training.ipynb").exists()
    lines = update(workspace, clone / "lessons")

    line = lines[1]
    assert line.startswith("01_tensors: updated — 2 answers kept, 1 of your own cells kept, 2 course cells you "
                           "edited kept, 3 course cells new or changed, 3 course cells removed; your answer to "
                           "causal_mask kept and marked: the exercise is no longer in this lesson; the task of "
                           "normalize changed: read it again and compare your answer; backup: .backups/01_tensors-")
    others = [p.stem for p in sorted((ROOT / "lessons").glob("*.ipynb")) if p.stem not in ("01_tensors", "07_training")]
    assert lines == [f"{n}: up to date" if n != "01_tensors" else line for n in ["00_setup", "01_tensors", *others[1:]]] \
        + ["added 99_extra", "07_training: no longer in the course — your notebook is left as it is"]
    backup = workspace / line.split("backup: ")[1]
    assert backup.parent == workspace / ".backups" and backup.read_bytes() == old_bytes
    assert (workspace / "07_training.ipynb").read_bytes() == training  # the removed lesson: the learner's, untouched
    assert (workspace / "99_extra.ipynb").exists()

    after = read(path)
    # Every answer kept, with its outputs; an untouched stub takes the new stub.
    assert find(after, "broadcast_shape-answer").source == correct
    assert find(after, "broadcast_shape-answer").outputs[0].text == "hello\n"
    assert find(after, "normalize-answer").source.endswith("# my try")
    assert find(after, "one_hot-answer").source == find(new, "one_hot-answer").source
    # The removed exercise's answer: kept, marked, untagged, where it was (after the cell it followed).
    marked = find(after, "causal_mask-answer")
    assert marked.source.startswith("# The exercise causal_mask is no longer in this lesson")
    assert marked.source.endswith("return 'mine'") and "nbgrader" not in marked.metadata
    assert ids(after)[ids(after).index("causal_mask-answer") - 1] == "01_tensors-4fded2e9bd"
    # The new teaching cells in place, in the new lesson's order; every course cell is the new lesson's.
    assert [i for i in ids(after) if i in ids(new)] == ids(new)
    assert gone not in ids(after) and added.id in ids(after)
    for cell in new.cells:
        if cell.id not in ("broadcast_shape-answer", "normalize-answer", first_print):
            assert find(after, cell.id).source == cell.source
    # The learner's cells: the edited teaching cell in its place, the one the course changed next to where it was,
    # the added one after the cell it followed.
    assert find(after, first_print).source.endswith("print('edited by me')")
    assert ids(after)[ids(after).index(first_print) + 1] == "mynotes1"
    assert find(after, broadcasting).source.endswith("My note: shapes align on the right.")
    assert ids(after).index(broadcasting) == ids(after).index(changed.id) - 1

    # A second update changes nothing.
    before = files(workspace)
    lines = update(workspace, clone / "lessons")
    assert [x for x in lines if "up to date" not in x] == [
        "07_training: no longer in the course — your notebook is left as it is"]
    assert files(workspace) == before


# --- a broken notebook is reported and left as it was --------------------------------------------------------------

def test_the_command_reports_a_broken_notebook_leaves_it_as_it_was_and_exits_1(tmp_path):
    env = dict(os.environ, TORCHDOJO_WORKSPACE=str(tmp_path / "ws"))
    cmd = [sys.executable, "-m", "grader", "update"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "added 01_tensors" in first.stdout and str(tmp_path / "ws") in first.stdout
    path = tmp_path / "ws" / "06_data.ipynb"
    text = path.read_text()
    conflicted = text.replace('"cells": [', '"cells": [\n<<<<<<< HEAD\n=======\n>>>>>>> origin/main', 1)
    path.write_text(conflicted)
    lesson01 = (tmp_path / "ws" / "01_tensors.ipynb")
    lesson01.write_bytes(lesson01.read_bytes()[:1000])  # truncated
    before = files(tmp_path / "ws")
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert second.returncode == 1
    assert ("06_data.ipynb could not be read (it has git merge-conflict markers, <<<<<<< and >>>>>>>): left as it "
            "was — fix it, or rename it and run `python -m grader update` again for a fresh copy") in second.stdout
    assert "01_tensors.ipynb could not be read (it is not valid JSON" in second.stdout
    assert "02_autograd: up to date" in second.stdout
    assert files(tmp_path / "ws") == before  # byte for byte, and no backup


@pytest.mark.parametrize("content, why", [
    (b"", "the file is empty"),
    (b"\xff\xfe{}", "it is not UTF-8 text"),
    (b'{"cells": 3}', "it is not a Jupyter notebook"),
    (b'[1, 2]', "it is not a Jupyter notebook"),
    (json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [], "cells": []}).encode(),
     "it is in notebook format 3"),
    (json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code"}]}).encode(),
     "it is not a valid notebook"),
])
def test_an_unreadable_notebook_is_never_overwritten(tmp_path, content, why):
    write(tmp_path / "lessons" / "01_x.ipynb", V1)
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "01_x.ipynb").write_bytes(content)
    [line] = update(tmp_path / "ws", tmp_path / "lessons")
    assert line.startswith(f"01_x.ipynb could not be read ({why}") and "left as it was" in line
    assert (tmp_path / "ws" / "01_x.ipynb").read_bytes() == content
    assert not (tmp_path / "ws" / ".backups").exists()


# --- the rules, one at a time ---------------------------------------------------------------------------------------

def test_an_answer_found_by_its_definition_moves_into_the_answer_cell(tmp_path):
    old = created(tmp_path, V1)
    old.cells = [c for c in old.cells if c.id != "f-answer"]  # the learner deleted the stub...
    old.cells.append(learner_cell("def f(x):\n    return x + 1", "abc123"))  # ...and wrote f at the end
    lines, after = merged_with(tmp_path, old, V1)
    assert lines[0].startswith("01_x: updated — 1 answer kept;")
    assert find(after, "f-answer").source == "def f(x):\n    return x + 1"
    assert find(after, "f-answer").outputs[0].text == "ran\n"  # the learner's outputs stay with it
    assert find(after, "f-answer").metadata["nbgrader"]["grade_id"] == "f-answer"
    assert ids(after) == ids(V1)  # it took the answer cell's place and id, and is not kept twice


def test_a_copy_of_an_answer_cell_is_kept_untagged_and_the_graded_cell_stays_the_graded_one(tmp_path):
    old = created(tmp_path, V1)
    first = find(old, "f-answer")
    first.source = "def f(x):\n    return 1  # first try"
    pasted = copy.deepcopy(first)  # JupyterLab's copy and paste: a new id, the same nbgrader grade_id
    pasted.id, pasted.source = "pasted1", "def f(x):\n    return 2  # second try"
    old.cells.insert(ids(old).index("f-answer") + 1, pasted)
    lines, after = merged_with(tmp_path, old, V1)
    assert lines[0].startswith("01_x: updated — 1 answer kept, 1 of your own cells kept;")
    # The batch grader graded the last tagged cell; it is the answer cell now, and the only tagged one.
    graded = [c for c in after.cells if "f-answer" in (c.id, c.metadata.get("nbgrader", {}).get("grade_id"))]
    assert [c.source for c in graded] == ["def f(x):\n    return 2  # second try"]
    kept = [c for c in after.cells if c.source.endswith("# first try")]
    assert len(kept) == 1 and "nbgrader" not in kept[0].metadata and kept[0].id == "f-answer-copy"
    assert ids(after).index(kept[0].id) == ids(after).index("f-answer") - 1  # in its old order
    assert update(tmp_path / "ws", tmp_path / "lessons") == ["01_x: up to date"]


def test_an_untouched_stub_takes_the_changed_stub_and_an_answer_stays(tmp_path):
    old = created(tmp_path, V1)
    find(old, "g-answer").source = "def g(x):\n    return x"
    new = lesson("01_x", *[c if c[0] != "answer" else (c[0], c[1], stub(c[1], "# YOUR CODE HERE: one line"))
                           for c in V1_CELLS])
    lines, after = merged_with(tmp_path, old, new)
    assert find(after, "f-answer").source == stub("f", "# YOUR CODE HERE: one line")
    assert find(after, "g-answer").source == "def g(x):\n    return x"
    assert lines[0].startswith("01_x: updated — 1 answer kept, 1 course cell new or changed;")
    # The workspace now remembers the new stubs: the next change of f's stub reaches the learner too.
    newer = lesson("01_x", *[c if c[0] != "answer" else (c[0], c[1], stub(c[1], "# YOUR CODE HERE: two lines"))
                             for c in V1_CELLS])
    _, after = merged_with(tmp_path, read(tmp_path / "ws" / "01_x.ipynb"), newer)
    assert find(after, "f-answer").source == stub("f", "# YOUR CODE HERE: two lines")
    assert find(after, "g-answer").source == "def g(x):\n    return x"


def test_without_the_record_a_stub_that_changed_upstream_is_kept_as_the_learners(tmp_path):
    """A notebook copied by hand has no record of its stubs: an old stub might be an answer, so it is kept."""
    old = copy.deepcopy(V1)
    new = lesson("01_x", *[c if c[0] != "answer" else (c[0], c[1], stub(c[1], "# changed")) for c in V1_CELLS])
    _, after = merged_with(tmp_path, old, new)
    assert find(after, "f-answer").source == stub("f")


def test_learner_cells_keep_their_order_after_the_cell_they_followed(tmp_path):
    old = created(tmp_path, V1)
    part1, print1, part2, print2 = (cell_id("01_x", nbformat.v4.new_markdown_cell("## Part 1")),
                                    cell_id("01_x", nbformat.v4.new_code_cell("print(1)")),
                                    cell_id("01_x", nbformat.v4.new_markdown_cell("## Part 2")),
                                    cell_id("01_x", nbformat.v4.new_code_cell("print(2)")))
    at = lambda i: ids(old).index(i) + 1  # noqa: E731
    old.cells.insert(at(print2), learner_cell("d = 4", "d"))     # after a cell the course removes
    old.cells.insert(at(print1), learner_cell("b = 2", "b"))
    old.cells.insert(at("b"), learner_cell("c = 3", "c", tags=["mine"]))
    old.cells.insert(0, learner_cell("a = 1", "a"))              # before everything
    new = lesson("01_x", *[c for c in V1_CELLS if c != ("code", "print(2)")])
    new.cells.insert(ids(new).index(print1) + 1, nbformat.v4.new_markdown_cell("inserted by the course"))
    new.cells[ids(new).index(print1) + 1].id = "01_x-0123456789"
    lines, after = merged_with(tmp_path, old, new)
    assert lines[0].startswith("01_x: updated — 4 of your own cells kept, 1 course cell new or changed, "
                               "1 course cell removed; backup: .backups/01_x-")
    order = ids(after)
    assert order[0] == "a"
    assert order[order.index(print1):order.index(print1) + 4] == [print1, "b", "c", "01_x-0123456789"]
    assert order[order.index(part2) + 1] == "d"  # print(2) is gone: d follows the cell before it
    assert find(after, "c").metadata == {"tags": ["mine"]} and find(after, "c").outputs[0].text == "ran\n"
    assert part1 in order and print2 not in order


def test_teaching_cells_edited_by_the_learner_are_theirs(tmp_path):
    old = created(tmp_path, V1)
    print1 = cell_id("01_x", nbformat.v4.new_code_cell("print(1)"))
    print2 = cell_id("01_x", nbformat.v4.new_code_cell("print(2)"))
    find(old, print1).source = "print(1, 'mine')"
    find(old, print2).source = "print(2, 'mine')"
    new = lesson("01_x", *[c if c != ("code", "print(2)") else ("code", "print(2, 'new')") for c in V1_CELLS])
    print2_new = cell_id("01_x", nbformat.v4.new_code_cell("print(2, 'new')"))
    lines, after = merged_with(tmp_path, old, new)
    assert lines[0].startswith("01_x: updated — 2 course cells you edited kept, 1 course cell new or changed")
    assert find(after, print1).source == "print(1, 'mine')"  # in place of the course's cell
    # The course changed the cell the learner edited: theirs stays where it was, after the cell it followed.
    assert [c.source for c in after.cells if "print(2" in c.source] == ["print(2, 'mine')", "print(2, 'new')"]
    assert ids(after).index(print2) == ids(after).index(print2_new) - 1
    assert update(tmp_path / "ws", tmp_path / "lessons") == ["01_x: up to date"]


def test_an_untouched_teaching_cell_follows_the_course_and_keeps_its_outputs(tmp_path):
    old = created(tmp_path, V1)
    print1 = cell_id("01_x", nbformat.v4.new_code_cell("print(1)"))
    find(old, print1).outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    find(old, "f-check").metadata["editable"] = True  # checks always come from the course...
    find(old, "f-check").source = "print('debugging')\ncheck(f)"
    new = lesson("01_x", *V1_CELLS, ("code", "print(3)"))
    lines, after = merged_with(tmp_path, old, new)
    assert find(after, print1).outputs[0].text == "1\n"
    assert find(after, "f-check").source == "check(f)" and find(after, "f-check").metadata["editable"] is False
    # ... and what the learner wrote in one is kept below it, unlocked and untagged, and said
    mine = after.cells[ids(after).index("f-check") + 1]
    assert mine.source == "print('debugging')\ncheck(f)" and not {"nbgrader", "editable"} & set(mine.metadata)
    assert "1 check cell you wrote in kept below the course's" in lines[0]
    assert [i for i in ids(after) if i != mine.id] == ids(new)


def test_the_answer_of_a_removed_exercise_is_marked_once_and_its_untouched_stub_goes(tmp_path):
    old = created(tmp_path, V1)
    find(old, "f-answer").source = "def f(x):\n    return x"
    without_f = lesson("01_x", *[c for c in V1_CELLS if not {"f", "## Exercise f"} & set(c[1:])])
    lines, after = merged_with(tmp_path, old, without_f)
    assert "your answer to f kept and marked: the exercise is no longer in this lesson" in lines[0]
    marked = find(after, "f-answer")
    assert marked.source == ("# The exercise f is no longer in this lesson: your code is kept here, and it is not "
                             "graded.\ndef f(x):\n    return x")
    assert "nbgrader" not in marked.metadata and "f-check" not in ids(after)
    # Later updates, with other changes, never mark it twice; g, never touched, goes when g is removed.
    neither = lesson("01_x", *[c for c in V1_CELLS if not {"f", "g", "## Exercise f", "## Exercise g"} & set(c[1:])])
    lines, again = merged_with(tmp_path, after, neither)
    assert lines[0].startswith("01_x: updated — 1 of your own cells kept, 3 course cells removed;")
    assert find(again, "f-answer").source == marked.source and "g-answer" not in ids(again)
    # An exercise that comes back takes its answer back, unmarked.
    _, back = merged_with(tmp_path, again, V1)
    assert find(back, "f-answer").source == "def f(x):\n    return x"
    assert find(back, "f-answer").metadata["nbgrader"]["grade_id"] == "f-answer"


def test_the_learners_own_notebooks_are_never_touched(tmp_path):
    created(tmp_path, V1)
    mine = tmp_path / "ws" / "notes.ipynb"
    mine.write_text("not even a notebook")
    (tmp_path / "ws" / "99_mine.ipynb").write_text("{}")
    before = files(tmp_path / "ws")
    assert update(tmp_path / "ws", tmp_path / "v1") == ["01_x: up to date"]
    assert files(tmp_path / "ws") == before


def test_backups_never_overwrite_an_earlier_one(tmp_path):
    created(tmp_path, V1)
    lines = []
    for n in range(3):  # three course updates within a second
        write(tmp_path / "v1" / "01_x.ipynb", lesson("01_x", *V1_CELLS, ("md", f"note {n}")))
        lines += update(tmp_path / "ws", tmp_path / "v1")
    backups = sorted((tmp_path / "ws" / ".backups").iterdir())
    assert len(backups) == 3 and len({b.read_bytes() for b in backups}) == 3
    assert all(line.split("backup: ")[1] in {f".backups/{b.name}" for b in backups} for line in lines)


# --- the merged notebook grades the same -----------------------------------------------------------------------------

def test_the_batch_grader_picks_the_learners_answers_in_the_merged_notebook(tmp_path):
    workspace, lessons = tmp_path / "ws", tmp_path / "lessons"
    update(workspace)  # from the course's own lessons/
    path = workspace / "01_tensors.ipynb"
    nb, solutions = read(path), read(ROOT / "solutions" / "01_tensors.ipynb")
    solution = {name: find(solutions, f"{name}-answer").source for name in ("broadcast_shape", "pairwise_sq_dists",
                                                                           "batched_matmul")}
    find(nb, "broadcast_shape-answer").source = solution["broadcast_shape"]  # in the answer cell
    nb.cells.remove(find(nb, "pairwise_sq_dists-answer"))  # in a cell of their own at the end
    nb.cells.append(learner_cell(solution["pairwise_sq_dists"], "mine"))
    tried = find(nb, "batched_matmul-answer")  # a first try, then the answer in a pasted copy of the cell
    tried.source = "def batched_matmul(a, b):\n    return a"
    pasted = copy.deepcopy(tried)
    pasted.id, pasted.source = "pasted", solution["batched_matmul"]
    nb.cells.insert(nb.cells.index(tried) + 1, pasted)
    write(path, nb)
    shutil.copytree(ROOT / "lessons", lessons)  # a course update: one teaching cell changed
    new = read(lessons / "01_tensors.ipynb")
    new.cells[0].source += "\n\nA sentence more."
    new.cells[0].id = cell_id("01_tensors", new.cells[0])
    write(lessons / "01_tensors.ipynb", new)
    old_bytes = path.read_bytes()
    update(workspace, lessons)

    graded = Lesson.load("01_tensors")
    before = {a.name: a for a in graded.answers(old_bytes)[0]}
    after = {a.name: a for a in graded.answers(path.read_bytes())[0]}
    assert before.keys() == after.keys()
    assert {n: a.source for n, a in after.items()} == {n: a.source for n, a in before.items()}
    assert {n: after[n].source for n in solution} == solution
    assert {a.found for a in after.values()} == {"id"}  # no longer picked by its definition: it is the answer cell



def test_a_notebook_saved_without_cell_ids_is_recognised_not_duplicated(tmp_path):
    old = created(tmp_path, V1)
    find(old, "f-answer").source = "def f(x):\n    return x"
    old.cells.insert(ids(old).index("f-answer") + 1, learner_cell("print('mine')", "mine1"))
    data = json.loads(nbformat.writes(old))
    data["nbformat_minor"] = 4  # as Colab and older editors save it: no cell ids at all
    for cell in data["cells"]:
        del cell["id"]
    (tmp_path / "ws" / "01_x.ipynb").write_text(json.dumps(data))
    lines = update(tmp_path / "ws", tmp_path / "v1")  # the course did not change
    after = read(tmp_path / "ws" / "01_x.ipynb")
    assert lines[0].startswith("01_x: updated — 1 answer kept, 1 of your own cells kept;"), lines  # ids given back
    assert len(after.cells) == len(V1.cells) + 1 and find(after, "f-answer").source == "def f(x):\n    return x"
    assert [c.source for c in after.cells if c.id not in ids(V1)] == ["print('mine')"]
    changed = lesson("01_x", *V1_CELLS[:-1], ("md", "## The end, revised"))
    data["cells"] = [c for c in data["cells"] if "".join(c["source"]) != "print('mine')"]  # now a course change
    (tmp_path / "ws" / "01_x.ipynb").write_text(json.dumps(data))
    lines, after = merged_with(tmp_path, nbformat.reads(json.dumps(data), as_version=4), changed)
    assert ids(after) == ids(changed) and "1 course cell new or changed, 1 course cell removed" in lines[0]


def test_an_exercise_answered_inside_another_exercises_cell_stays_answered(tmp_path):
    old = created(tmp_path, V1)
    find(old, "f-answer").source = "def f(x):\n    return x\n\ndef g(x):\n    return -x"
    old.cells = [c for c in old.cells if c.id != "g-answer"]  # g's stub deleted: g is graded from f's cell
    lines, after = merged_with(tmp_path, old, V1)
    assert "g-answer" not in ids(after), "a stub put back would be graded instead of the learner's g"
    assert find(after, "f-answer").source.endswith("return -x")
    assert update(tmp_path / "ws", tmp_path / "lessons") == ["01_x: up to date"]


def test_a_note_after_a_changed_cell_stays_in_its_section(tmp_path):
    old = created(tmp_path, V1)
    part2 = next(c.id for c in old.cells if c.source == "## Part 2")
    old.cells.insert(ids(old).index(part2) + 1, learner_cell("# my note on part 2", "note1"))
    changed = lesson("01_x", *[("md", "## Part 2, revised") if c == ("md", "## Part 2") else c for c in V1_CELLS])
    _, after = merged_with(tmp_path, old, changed)
    sources = [c.source for c in after.cells]
    assert sources.index("# my note on part 2") == sources.index("## Part 2, revised") + 1


def test_an_unusable_workspace_or_backup_folder_is_a_message_not_a_traceback(tmp_path):
    old = created(tmp_path, V1)
    (tmp_path / "ws" / ".backups").write_text("a file where the backups go")
    before = files(tmp_path / "ws")
    changed = lesson("01_x", *V1_CELLS, ("md", "new"))
    write(tmp_path / "lessons" / "01_x.ipynb", changed)
    [line] = update(tmp_path / "ws", tmp_path / "lessons")
    assert line.startswith("01_x.ipynb could not be updated (") and "left as it was" in line
    assert files(tmp_path / "ws") == before
    env = dict(os.environ, TORCHDOJO_WORKSPACE=str(tmp_path / "ws" / "01_x.ipynb"))  # a file, not a folder
    done = subprocess.run([sys.executable, "-m", "grader", "update"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "point TORCHDOJO_WORKSPACE at a folder you can write to" in done.stderr

# --- the whole course, for real: build, git pull, update ------------------------------------------------------------

def course_command(repo, *args):
    """`python -m grader ...` run with the grader of a clone of the course, its workspace the default one inside."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHDOJO_WORKSPACE"}
    env["PYTHONPATH"] = str(repo)
    done = subprocess.run([sys.executable, "-m", "grader", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def cut(text: str, start: str, end: str) -> str:
    """`text` without the part from `start` up to (not including) `end`."""
    i = text.index(start)
    return text[:i] + text[text.index(end, i + len(start)):]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the course as a git checkout")
def test_building_and_pulling_a_real_course_update_never_touches_the_workspace(tmp_path):
    upstream, learner = tmp_path / "upstream", tmp_path / "learner"
    git("clone", "-q", str(ROOT), str(upstream), cwd=tmp_path)
    git("clone", "-q", str(upstream), str(learner), cwd=tmp_path)
    workspace = learner / "workspace"

    assert "added 01_tensors" in course_command(learner, "update")
    solved = {c.id: c.source for c in read(learner / "solutions" / "01_tensors.ipynb").cells}
    mine = workspace / "01_tensors.ipynb"
    nb = read(mine)
    for name in ("broadcast_shape", "normalize"):
        find(nb, f"{name}-answer").source = solved[f"{name}-answer"]
    at = nb.cells.index(find(nb, "broadcast_shape-answer"))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("print(broadcast_shape((2, 1), (3,)))  # my own try"))
    write(mine, nb)
    before = {p.name: p.read_bytes() for p in workspace.glob("*.ipynb")}

    course_command(learner, "build")  # the build writes lessons/ and solutions/, never the workspace
    assert {p.name: p.read_bytes() for p in workspace.glob("*.ipynb")} == before
    assert git("status", "--porcelain", cwd=learner) == "", "the workspace is git-ignored, the build reproducible"

    # the course changes: a teaching cell edited, one removed, one added, a stub changed, an exercise removed, a
    # lesson added and a lesson removed
    src = upstream / "solutions" / "01_tensors.py"
    text = src.read_text()
    text = text.replace("everything else is built from", "everything else is built from (second edition)")
    text = cut(text, "# %%\nv = torch.tensor([[3.0, 4.0],", "# %% [markdown]\n# ## Exercise: `normalize`")
    text = cut(text, "# %% [markdown]\n# ## Exercise: `normalize`", "# %% [markdown]\n# ## Summary")
    text = text.replace('"""Squared Euclidean distances between', '"""Squared L2 distances between')
    text = text.replace("# %% [markdown]\n# ## Summary", "# %%\nprint('new in this edition')\n\n# %% [markdown]\n"
                        "# ## Summary")
    src.write_text(text)
    (upstream / "solutions" / "99_extra.py").write_text("# %% [markdown]\n# # 99 · Extra\n\n# %%\nprint(8)\n")
    for path in (upstream / "solutions").glob("07_training.*"):
        path.unlink()
    (upstream / "lessons" / "07_training.ipynb").unlink()
    course_command(upstream, "build")
    git("add", "-A", cwd=upstream)
    git("commit", "-qm", "a course update", cwd=upstream)

    git("pull", "-q", cwd=learner)
    out = course_command(learner, "update")
    assert "added 99_extra" in out and "07_training: no longer in the course" in out
    assert "00_setup: up to date" in out
    assert "01_tensors: updated" in out and "1 answer kept" in out and "your answer to normalize kept and marked" in out
    backups = list((workspace / ".backups").glob("01_tensors-*.ipynb"))
    assert len(backups) == 1 and backups[0].read_bytes() == before["01_tensors.ipynb"]
    assert (workspace / "07_training.ipynb").read_bytes() == before["07_training.ipynb"]  # the learner's work

    nb, new = read(mine), read(learner / "lessons" / "01_tensors.ipynb")
    sources = [c.source for c in nb.cells]
    assert find(nb, "broadcast_shape-answer").source == solved["broadcast_shape-answer"]
    at = nb.cells.index(find(nb, "broadcast_shape-answer"))
    assert "my own try" in nb.cells[at + 1].source
    kept = [c for c in nb.cells if solved["normalize-answer"] in c.source]
    assert len(kept) == 1 and "no longer in this lesson" in kept[0].source and "nbgrader" not in kept[0].metadata
    assert find(nb, "pairwise_sq_dists-answer").source == find(new, "pairwise_sq_dists-answer").source
    assert "Squared L2 distances" in find(nb, "pairwise_sq_dists-answer").source
    assert "print('new in this edition')" in sources and "(second edition)" in sources[0]
    assert not any("v = torch.tensor([[3.0, 4.0]," in s for s in sources)
    assert [c.id for c in new.cells] == [c.id for c in nb.cells if c.id in {n.id for n in new.cells}]

    again = course_command(learner, "update")
    assert "updated" not in again and "added" not in again
    assert len(list((workspace / ".backups").glob("*.ipynb"))) == 1
    assert git("status", "--porcelain", cwd=learner) == ""
