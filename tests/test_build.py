"""The build: generated notebooks are up to date, clean, reproducible, and hide every solution."""
import re

import nbformat
import pytest

from grader.build import build, build_all, sources

LESSONS = sources()


def test_generated_notebooks_are_up_to_date():
    stale = build_all(check_only=True)
    assert not stale, f"out of date (run `python -m grader build`): {[p.name for p in stale]}"


@pytest.mark.parametrize("src", LESSONS, ids=lambda p: p.stem)
def test_build_is_byte_identical_on_rebuild(src):
    assert build(src) == build(src)


@pytest.mark.parametrize("src", LESSONS, ids=lambda p: p.stem)
def test_notebooks_are_clean_and_cells_have_stable_unique_ids(src):
    for text in build(src).values():
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
        ids = [c.id for c in nb.cells]
        assert len(ids) == len(set(ids))
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("src", LESSONS, ids=lambda p: p.stem)
def test_student_version_has_stubs_and_locked_checks(src):
    solution_text, student_text = build(src).values()
    solution = nbformat.reads(solution_text, as_version=4)
    student = nbformat.reads(student_text, as_version=4)
    assert len(solution.cells) == len(student.cells)
    for full, stub in zip(solution.cells, student.cells):
        meta = full.metadata.get("nbgrader", {})
        if meta.get("solution"):
            assert "### BEGIN SOLUTION" in full.source
            assert "BEGIN SOLUTION" not in stub.source and "raise NotImplementedError()" in stub.source
            hidden = re.search(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", full.source, re.S).group(1)
            assert not any(line.strip() and line in stub.source.splitlines() for line in hidden.splitlines()
                           if len(line.strip()) > 12), "a solution line leaked into the learner's notebook"
        elif meta.get("grade"):
            assert meta["locked"] and meta["points"] > 0
            assert stub.metadata["editable"] is False and stub.metadata["deletable"] is False
            assert stub.source == full.source
        else:
            assert stub.source == full.source
