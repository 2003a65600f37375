"""The check engine itself: verdicts, diagnoses, the forbidden-call tracer, devices, hidden cases, hints."""
import pytest
import torch

from grader import check, evaluate, hint
from grader import store
from grader.compare import Mismatch, expect_tensor, expect_value
from grader.registry import _EXERCISES, exercise, exercises
from grader.runner import is_stub
from grader.tracing import Tracer
from verdicts import assert_rejects


def sq_dists_ref(x, y):
    return ((x[:, None] - y[None]) ** 2).sum(-1)


@pytest.fixture
def demo():
    """A throw-away exercise registered for the test only."""
    exercises()  # load the real ones first

    @exercise("99_demo", points=3, difficulty=2, minutes=5, hints=["first hint", "second hint"],
              forbidden={"cdist": "use broadcasting"})
    def demo_sq_dists(t, fn):
        for n, m, d in [(5, 7, 3), (1, 4, 2)]:
            x, y = t.randn(n, d), t.randn(m, d)
            t.compare(f"x {(n, d)}, y {(m, d)}", fn, (x, y), sq_dists_ref, grad=True,
                      explain=lambda got, exp, args: "distances, not squared?"
                      if torch.allclose(got ** 2, exp) else None)

    yield "demo_sq_dists"
    del _EXERCISES["demo_sq_dists"]


def right(x, y):
    return (x * x).sum(1, keepdim=True) + (y * y).sum(1) - 2 * x @ y.T


def test_correct_code_passes_with_points(demo):
    report = evaluate(right, name=demo)
    assert report.status == "passed" and report.points == 3 and report.max_points == 3
    assert all(c.passed for c in report.cases if not c.skipped)
    assert any(c.name.startswith("device check") for c in report.cases)


@pytest.mark.parametrize("wrong, fragments", [
    (lambda x, y: torch.cdist(x, y) ** 2, ("called `cdist`", "forbids")),
    (lambda x, y: sq_dists_ref(x, y).sqrt(), ("wrong values", "distances, not squared")),
    (lambda x, y: sq_dists_ref(x, y).unsqueeze(-1), ("expected shape (5, 7), got (5, 7, 1)", "size-1")),
    (lambda x, y: ((x[:, None] - y[None]) ** 2), ("extra trailing dimensions", "reduction")),
    (lambda x, y: sq_dists_ref(x, y).T, ("transposed",)),
    (lambda x, y: sq_dists_ref(x.float(), y.float()), ("expected dtype torch.float64", "float32")),
    (lambda x, y: sq_dists_ref(x, y).detach(), ("does not track gradients",)),
    (lambda x, y: sq_dists_ref(x, y).tolist(), ("should be a torch.Tensor, got list",)),
    (lambda x, y: torch.zeros(x.shape[0], y.shape[0], dtype=x.dtype) + sq_dists_ref(x, y),
     ("combines a cpu tensor", "device=x.device")),
    (lambda x, y: torch.nn.Parameter(sq_dists_ref(x, y)), ("plain torch.tensor", "parameter")),
])
def test_wrong_code_fails_with_a_diagnosis(demo, wrong, fragments):
    assert_rejects(wrong, demo, *fragments)


def test_in_place_change_of_an_input_is_reported(demo):
    def mutating(x, y):
        with torch.no_grad():
            y.add_(1)
        return sq_dists_ref(x, y - 1)
    assert_rejects(mutating, demo, "modified input 1 in place")


def test_result_left_on_the_cpu_is_caught_without_a_gpu(demo):
    def filled_on_cpu(x, y):
        out = torch.empty(x.shape[0], y.shape[0], dtype=x.dtype)  # no device=: stays on the CPU
        out[:] = sq_dists_ref(x, y)
        return out
    assert_rejects(filled_on_cpu, demo, "result is on cpu")


def test_forbidden_call_is_caught_even_when_the_learner_swallows_exceptions(demo):
    def sneaky(x, y):
        try:
            return torch.cdist(x, y) ** 2
        except Exception:
            return sq_dists_ref(x, y)
    assert_rejects(sneaky, demo, "called `cdist`")


def test_stub_is_not_attempted_and_a_torch_not_implemented_error_is_not(demo):
    def stub(x, y):
        # YOUR CODE HERE
        raise NotImplementedError()
    report = evaluate(stub, name=demo)
    assert report.status == "not_attempted" and report.points == 0 and not report.passed

    def hits_a_missing_kernel(x, y):
        torch.zeros(3, device="meta").nonzero()  # NotImplementedError from inside torch
        return sq_dists_ref(x, y)
    report = evaluate(hits_a_missing_kernel, name=demo)
    assert report.status == "failed"
    assert "NotImplementedError" in report.cases[0].message


def test_is_stub_looks_at_where_the_error_was_raised():
    def stub():
        raise NotImplementedError()
    for fn, expected in [(stub, True), (lambda: torch.zeros(2, device="meta").tolist(), False)]:
        with pytest.raises(NotImplementedError) as info:
            fn()
        assert is_stub(info.value) is expected


def test_hidden_round_draws_new_cases_and_catches_hard_coding(monkeypatch):
    @exercise("99_demo", points=1, difficulty=1, minutes=1, hints=["h"])
    def demo_double(t, fn):
        for n in (3, 5):
            t.compare(f"x ({n},)", fn, (t.randn(n),), lambda x: 2 * x)

    try:
        seen = {}

        def recorder(x):
            seen[(x.shape[0], float(x[0]))] = 2 * x
            return 2 * x

        assert evaluate(recorder, name="demo_double").passed

        def hard_coded(x):  # answers memorised from the visible cases
            known = seen.get((x.shape[0], float(x[0])))
            return known.to(x.device) if known is not None else torch.zeros_like(x)

        assert evaluate(hard_coded, name="demo_double").passed
        monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", "12345")
        report = evaluate(hard_coded, name="demo_double")
        hidden = [c for c in report.cases if c.hidden]
        assert report.status == "failed" and hidden and all(c.name.startswith("hidden case") for c in hidden)
        failing = [c for c in hidden if not c.passed]
        assert failing and all("at index" not in c.message for c in failing)  # values of hidden cases stay hidden
        assert evaluate(lambda x: x + x, name="demo_double").passed
    finally:
        del _EXERCISES["demo_double"]


def test_check_prints_and_raises_and_records_progress(demo, capsys):
    assert check(right, name=demo) is None
    assert "✓ demo_sq_dists" in capsys.readouterr().out
    assert store.load()[demo]["status"] == "passed"
    with pytest.raises(AssertionError, match="did not pass"):
        check(lambda x, y: sq_dists_ref(x, y).sqrt(), name=demo)
    assert "wrong values" in capsys.readouterr().out
    assert store.load()[demo]["status"] == "failed"


def test_hints_come_one_at_a_time(demo, capsys):
    hint(demo)
    hint(demo)
    hint(demo)
    out = capsys.readouterr().out
    assert out.index("first hint") < out.index("second hint")
    assert "Hint 2 of 2" in out and "last hint" in out


def test_checks_leave_the_learners_random_state_alone(demo):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    evaluate(right, name=demo)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_names_get_suggestions():
    with pytest.raises(KeyError, match="pick_device"):
        evaluate(lambda: None, name="pick_devise")


def test_tracer_sees_operators_methods_and_namespaces():
    x = torch.randn(3, 4)
    with Tracer() as tracer:
        x @ x.T, x.matmul(x.T), torch.nn.functional.normalize(x), x.add_(1)
    assert tracer.called.count("matmul") == 2 and "normalize" in tracer.called and "add" in tracer.called


def test_expect_tensor_diagnoses():
    exp = torch.zeros(4, 1)
    with pytest.raises(Mismatch, match="keepdim"):
        expect_tensor(torch.zeros(4), exp)
    with pytest.raises(Mismatch, match="nan"):
        expect_tensor(torch.tensor([[float("nan")], [0.0], [0.0], [0.0]]), exp)
    with pytest.raises(Mismatch, match="integer result"):
        expect_tensor(torch.zeros(4, 1, dtype=torch.int64), exp)
    expect_tensor(torch.zeros(4, 1) + 1e-9, exp)


def test_expect_value_is_strict_about_types():
    with pytest.raises(Mismatch, match="should be a tuple, got list"):
        expect_value([1, 2], (1, 2))
    with pytest.raises(Mismatch, match="use .item"):
        expect_value(torch.tensor(3), 3)
    expect_value((1, 2), (1, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cases_run_on_cuda_when_present(demo):
    report = evaluate(right, name=demo)
    assert any(c.name.startswith("cuda:") and c.passed for c in report.cases)
    def cpu_only(x, y):
        return sq_dists_ref(x.cpu(), y.cpu())
    assert_rejects(cpu_only, demo, "is on cpu")


def test_scalar_results_and_gradients_for_chosen_inputs_only():
    @exercise("99_demo", points=1, difficulty=1, minutes=1, hints=["h", "h2"])
    def demo_weighted_mean(t, fn):
        x, w = t.randn(4, 3), t.rand(3)
        # PyTorch's own weighted losses cannot differentiate their weights: only x is differentiated.
        t.compare("x (4, 3), w (3,)", fn, (x, w), lambda x, w, scale: (x * w).mean() * scale / 2,
                  grad=True, wrt=(0,),
                  kwargs={"scale": torch.tensor(2.0, dtype=torch.float64)})

    def right_one(x, w, scale):
        return (x * w).mean() * scale / 2

    try:
        assert evaluate(right_one, name="demo_weighted_mean").passed
        assert_rejects(lambda x, w, scale: (x * w).sum(), "demo_weighted_mean", "wrong values")
        assert_rejects(lambda x, w, scale: (x * w.detach()).mean().detach(), "demo_weighted_mean",
                       "does not track gradients")
    finally:
        del _EXERCISES["demo_weighted_mean"]


def test_report_counts_read_as_english():
    from grader.report import CaseResult, Report
    cases = [CaseResult(f"case {i}", False, "wrong") for i in range(4)] + [CaseResult("ok", True)]
    text = Report("f", "failed", 1, cases).text()
    assert "4 of 5 cases failed" in text and "… and 1 more failing case\n" in text and "✓ 1 other case passed" in text
    assert Report("f", "passed", 1, [CaseResult("ok", True)]).text().startswith("✓ f: 1 case passed")


def test_errors_point_into_the_learners_cell_and_advise():
    from grader.runner import describe_error
    try:
        compile("x = 1\ndef f(:\n    pass\n", "<answer cell f>", "exec")
    except SyntaxError as e:
        assert describe_error(e).startswith("raised SyntaxError at line 2 of your cell: invalid syntax")
    try:
        raise MemoryError()
    except MemoryError as e:
        assert "ran out of memory" in describe_error(e)


def test_a_report_puts_advice_under_the_score_and_does_not_repeat_itself():
    from grader.report import CaseResult, Report
    text = Report("f", "failed", 1, [], error="raised NameError in f (line 2): name 'g' is not defined\n→ move it").text()
    assert text.splitlines()[:2] == ["✗ f: raised NameError in f (line 2): name 'g' is not defined · 0/1 points",
                                     "  → move it"]
    long = "failed on hidden inputs (drawn from the instructor's seed): make it work for any input"
    text = Report("f", "failed", 1, [CaseResult("a", False, long), CaseResult("b", False, long)]).text()
    assert text.count(long) == 1 and "(the same)" in text
