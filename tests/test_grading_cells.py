"""Answer cells in the batch grader behave as in Jupyter, and the messages about them say what to do."""
import pytest

from adversarial.build import notebook, solution_answers, write
from grader import evaluate
from grader.grading.batch import grade

LESSON = "01_tensors"
SOLVED = solution_answers(LESSON)


def code_cell(cell_id: str, source: str) -> dict:
    return {"cell_type": "code", "id": cell_id, "metadata": {}, "execution_count": None, "outputs": [],
            "source": source}


def helper_in_another_cell() -> dict:
    """broadcast_shape's answer calls a helper that the learner wrote in a cell of its own."""
    nb = notebook(LESSON, {"broadcast_shape": "def broadcast_shape(a, b):\n    return _shape_of(a, b)\n"})
    helper = SOLVED["broadcast_shape"].replace("def broadcast_shape(", "def _shape_of(")
    nb["cells"].insert(1, code_cell("my-helper", helper))
    return nb


def jupyter_features() -> dict:
    """display(), magics, shell commands and help around the definitions, as notebook cells may have."""
    return notebook(LESSON, {"causal_mask": (
        "%matplotlib inline\n"
        "get_ipython().run_line_magic('config', \"InlineBackend.figure_format = 'retina'\")\n"
        "display(torch.ones(2, 2))\n"
        "!nvidia-smi\n"
        + SOLVED["causal_mask"] +
        "%time mask = causal_mask(4)\n"
        "display(mask)\n"
        "torch.triu?\n"), "normalize": "%%time\n" + SOLVED["normalize"]})


def two_answers_in_one_cell() -> dict:
    """one_hot and gather_rows merged into one cell, with a try-out that raises between them."""
    nb = notebook(LESSON, {"one_hot": SOLVED["one_hot"] + "one_hot(torch.tensor([3, 0]), 2)\n"
                           + SOLVED["gather_rows"]})
    nb["cells"] = [c for c in nb["cells"] if c.get("id") != "gather_rows-answer"]
    return nb


def kernel_only_attribute() -> dict:
    source = SOLVED["pairwise_sq_dists"].replace('"""\n', '"""\n    session = get_ipython().kernel.session\n', 1)
    return notebook(LESSON, {"pairwise_sq_dists": source})


def future_annotations() -> dict:
    """`from __future__ import annotations` holds for the rest of the notebook, as in IPython: the annotations
    name types that are never defined."""
    shape = SOLVED["broadcast_shape"].replace("-> tuple[int, ...]:", "-> Shape:")
    mask = SOLVED["causal_mask"].replace("(n: int", "(n: Size")
    assert "Shape" in shape and "Size" in mask
    return notebook(LESSON, {"broadcast_shape": "from __future__ import annotations\n\n" + shape,
                             "causal_mask": mask})


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cells")
    for student in (helper_in_another_cell, jupyter_features, two_answers_in_one_cell, kernel_only_attribute,
                    future_annotations):
        write(folder / "submitted" / f"{student.__name__}.ipynb", student())
    records = grade(LESSON, [str(folder / "submitted")], folder / "out", workers=1, log=lambda m: None)
    return {r["student"]: r for r in records}


def exercise(record: dict, name: str) -> dict:
    return next(ex for ex in record["exercises"] if ex["name"] == name)


def test_a_helper_from_another_cell_is_not_graded_and_the_message_says_where_it_goes(graded):
    ex = exercise(graded["helper_in_another_cell"], "broadcast_shape")
    assert ex["points"] == 0
    assert "NameError" in ex["message"] and "_shape_of" in ex["message"]
    assert "must move into this exercise's answer cell" in ex["message"], ex["message"]


def test_display_magics_and_shell_commands_work_in_an_answer_cell(graded):
    record = graded["jupyter_features"]
    assert record["score"] == record["max_score"], [ex["message"] for ex in record["exercises"]]
    assert not any(n.startswith("causal_mask:") for n in record["notes"]), record["notes"]


def test_a_failing_statement_costs_no_other_definition_of_the_same_cell(graded):
    record = graded["two_answers_in_one_cell"]
    assert exercise(record, "one_hot")["status"] == "passed"
    assert exercise(record, "gather_rows")["status"] == "passed", exercise(record, "gather_rows")["message"]
    assert any("raised RuntimeError" in n and "index 3 is out of bounds" in n for n in record["notes"]), \
        record["notes"]


def test_a_future_import_holds_for_the_cells_after_it(graded):
    record = graded["future_annotations"]
    assert record["score"] == record["max_score"], [ex["message"] for ex in record["exercises"]]


def test_a_kernel_only_attribute_of_get_ipython_says_it_is_not_available(graded):
    ex = exercise(graded["kernel_only_attribute"], "pairwise_sq_dists")
    assert ex["points"] == 0
    assert "get_ipython().kernel is not available while grading" in ex["message"], ex["message"]


def test_error_messages_drop_terminal_colours_and_explain_undefined_names():
    def normalize(x, dim=-1, eps=1e-12):
        raise RuntimeError("\x1b[1m\x1b[31mExpected all tensors to be on the same device\x1b[0m, cuda:0 and cpu")

    text = evaluate(normalize, name="normalize").text()
    assert "\x1b" not in text and "Expected all tensors to be on the same device, cuda:0 and cpu" in text
    assert "create new tensors with device=x.device" in text  # the advice still finds its words

    def gather_rows(x, idx):
        return _pick(x, idx)  # noqa: F821  (defined in another cell, in the learner's notebook)

    text = evaluate(gather_rows, name="gather_rows").text()
    assert "NameError" in text and "run the cell that defines it" in text
    assert "must move into this exercise's answer cell" in text
