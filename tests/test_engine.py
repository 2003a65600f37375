"""The check engine itself: verdicts, diagnoses, the forbidden-call tracer, devices, hidden cases, hints."""
import pytest
import torch

from grader import check, evaluate, hint
from grader import store
from grader.compare import Mismatch, expect_tensor, expect_value
from grader.registry import _EXERCISES, exercise, exercises
from grader.runner import is_stub
from grader.runner import untraced
from grader.tracing import ForbiddenCall, Tracer
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
    assert_rejects(mutating, demo, "changed input 1 in place", "compute a new tensor")


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
                  grad=True, wrt=(0,), kwargs={"scale": torch.tensor(2.0, dtype=torch.float64)},
                  explain=lambda got, exp, args: "a sum where the mean is asked for?")

    def right_one(x, w, scale):
        return (x * w).mean() * scale / 2

    try:
        assert evaluate(right_one, name="demo_weighted_mean").passed
        assert_rejects(lambda x, w, scale: (x * w).sum(), "demo_weighted_mean", "wrong values", "a sum where")
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


# --- forbidden Python objects, custom backward, engine-level diagnoses ----------------------------------------
from torch import broadcast_shapes as bound_early  # noqa: E402  (an alias made before any check runs)

PY_FORBIDDEN = {"torch.broadcast_shapes": "compute it yourself", "torch.optim.SGD": "write your own",
                "torch.vmap": "loop instead"}


@pytest.mark.parametrize("call", [
    lambda: bound_early((2, 1), (3,)),
    lambda: torch.functional.broadcast_shapes((2, 1), (3,)),
    lambda: torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
    lambda: type("Mine", (torch.optim.SGD,), {})([torch.zeros(1, requires_grad=True)], lr=0.1),
    lambda: torch.func.vmap(torch.sin)(torch.ones(2)),
], ids=["alias bound before", "other namespace", "class", "subclass", "torch.func alias"])
def test_forbidden_python_objects_refuse_through_every_alias(call):
    tracer = Tracer(PY_FORBIDDEN)
    with pytest.raises(ForbiddenCall) as caught, tracer:
        call()
    assert caught.value.advice in PY_FORBIDDEN.values() and tracer.violation is caught.value


def test_forbidden_python_objects_work_for_the_check_and_after_the_learner():
    with Tracer(PY_FORBIDDEN):
        with untraced():  # the check's own bookkeeping
            assert bound_early((2, 1), (3,)) == (2, 3)
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    assert bound_early((2, 1), (3,)) == (2, 3)
    assert torch.vmap(torch.sin)(torch.zeros(2)).tolist() == [0.0, 0.0]
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


class SigmoidWithForbiddenBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = 1 / (1 + torch.exp(-x))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(torch.logit(y)) * (1 - y)


def test_a_custom_backward_run_by_the_autograd_engine_is_traced():
    x = torch.randn(4, requires_grad=True)
    tracer = Tracer({"sigmoid": "by hand"})
    with pytest.raises(ForbiddenCall), tracer:
        SigmoidWithForbiddenBackward.apply(x).sum().backward()
    assert "logit" in tracer.called  # traced inside backward
    SigmoidWithForbiddenBackward.apply(x).sum().backward()  # and untraced again afterwards
    assert x.grad is not None


@pytest.fixture
def reduction_demo():
    exercises()

    @exercise("99_demo", points=1, difficulty=1, minutes=1, hints=["h"])
    def demo_center(t, fn):
        t.compare("x (4, 7)", fn, (t.randn(4, 7),), lambda x: x - x.mean(1, keepdim=True), grad=True)

    yield "demo_center"
    del _EXERCISES["demo_center"]


def test_a_broadcast_error_after_a_reduction_without_keepdim_is_diagnosed(reduction_demo):
    assert_rejects(lambda x: x - x.mean(1), reduction_demo, "must match the size", "keepdim=True")


def test_an_in_place_change_of_a_leaf_input_says_to_compute_a_new_tensor(reduction_demo):
    def centre_in_place(x):
        x -= x.mean(1, keepdim=True)
        return x
    report = evaluate(centre_in_place, reduction_demo)
    assert not report.passed and "compute a new tensor" in report.text() and "no_grad() would only" in report.text()


def test_progress_follows_each_lessons_notebook_order():
    from grader.build import _checked_names, sources
    order = list(exercises())
    for src in sources():
        in_notebook = [n for cell in src.read_text().split("# %%") for n in _checked_names(cell)]
        registered = [n for n in order if exercises()[n].lesson == src.stem]
        assert [n for n in in_notebook if n in registered] == registered, src.stem


def forward_on(fn, x, device: str):
    """Driver: a Linear layer on `device`, a batch as it comes (on the CPU); fn moves the batch and runs it."""
    with untraced():
        model = torch.nn.Linear(3, 2).to(device)
    return fn(model, x, torch.device(device))


def test_a_moved_copy_thrown_away_is_caught_without_a_gpu():
    @exercise("99_demo", points=1, difficulty=1, minutes=1, hints=["h"])
    def demo_forward(t, fn):
        t.device_check("a CPU batch for a model on the device", forward_on, (fn, t.randn(4, 3, dtype=torch.float32),
                                                                           "meta"), move_inputs=False)

    def right(model, x, device):
        x = x.to(device)
        return model(x)

    def discarded(model, x, device):
        x.to(device)  # returns a moved copy, which is dropped
        return model(x)

    try:
        assert evaluate(right, name="demo_forward").passed
        assert_rejects(discarded, "demo_forward", "combines a CPU tensor")
    finally:
        del _EXERCISES["demo_forward"]


def test_a_reduction_without_keepdim_that_broadcasts_silently_is_diagnosed(reduction_demo):
    # (4, 7) - (4,) fails, but on a (4, 4) slice it would broadcast: here the result is larger than expected
    assert_rejects(lambda x: x[:, :, None] - x.mean(1), reduction_demo, "expected shape", "keepdim=True")


def test_an_incomplete_reduction_to_a_scalar_is_not_sent_to_keepdim():
    @exercise("99_demo", points=1, difficulty=1, minutes=1, hints=["h"])
    def demo_mean(t, fn):
        t.compare("x (4, 3)", fn, (t.randn(4, 3),), lambda x: x.mean())

    try:
        report = evaluate(lambda x: x.mean(0), name="demo_mean")
        assert not report.passed and "keepdim" not in report.text()
    finally:
        del _EXERCISES["demo_mean"]


def test_an_operator_overload_or_the_operator_itself_is_caught_by_its_op_name(demo):
    assert_rejects(lambda x, y: torch.ops.aten.cdist.default(x, y) ** 2 if hasattr(torch.ops.aten, "cdist")
                   else torch.cdist(x, y) ** 2, demo, "called `cdist`")
    tracer = Tracer({"matmul": "use broadcasting", "softmax": "by hand"})
    for call, shown in [(lambda: torch.ones(2, 2) @ torch.ones(2, 2), "or the @ operator"),
                        (lambda: torch.ops.aten.softmax.int(torch.ones(3), 0), "")]:
        with pytest.raises(ForbiddenCall) as caught, tracer:
            call()
        assert caught.value.via == (f" ({shown})" if shown else "")


def test_nan_in_an_input_is_not_taken_for_a_change(reduction_demo):
    @exercise("99_demo", points=1, difficulty=1, minutes=1, hints=["h"])
    def demo_nan_to_zero(t, fn):
        x = t.randn(3, 4)
        x[0, 1] = float("nan")
        t.compare("x (3, 4) with a nan", fn, (x,), lambda x: torch.nan_to_num(x, nan=0.0))

    try:
        assert evaluate(lambda x: torch.where(x.isnan(), torch.zeros_like(x), x), name="demo_nan_to_zero").passed
    finally:
        del _EXERCISES["demo_nan_to_zero"]


def test_values_read_out_of_a_meta_tensor_get_stand_ins_so_the_device_check_goes_on():
    @exercise("99_demo", points=1, difficulty=1, minutes=1, hints=["h"])
    def demo_weighted(t, fn):
        x, y = t.randn(5, 3), t.randint(0, 3, (5,))
        t.compare("x (5, 3), y (5,)", fn, (x, y), lambda x, y: x.gather(1, y[:, None])[:, 0] * 2)

    def right(x, y):
        w = torch.full((x.shape[1],), 2.0, dtype=x.dtype, device=x.device)
        return x.gather(1, y[:, None])[:, 0] * w[y]

    def weight_on_the_cpu(x, y):  # w[y.cpu()] cannot run on meta; without stand-ins the check was skipped
        w = torch.full((x.shape[1],), 2.0, dtype=x.dtype)
        picked = w[y.cpu()]
        return x.gather(1, y[:, None])[:, 0] * picked

    try:
        assert evaluate(right, name="demo_weighted").passed
        assert_rejects(weight_on_the_cpu, "demo_weighted", "combines a CPU tensor")
    finally:
        del _EXERCISES["demo_weighted"]


def packed_on(fn, kind: str, padded, lengths, device: str):
    """Driver: a recurrent module on `device`; a padded batch as it comes (on the CPU) and CPU lengths; fn moves
    the batch, packs it and runs the module."""
    with untraced():
        torch.manual_seed(0)
        module = {"RNN": torch.nn.RNN, "GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM}[kind.split()[0]]
        extra = {"nonlinearity": "relu"} if kind == "RNN relu" else {}
        rnn = module(3, 4, num_layers=2, batch_first=True, **extra).to(device)
    return fn(rnn, padded, lengths, torch.device(device))


@pytest.mark.parametrize("kind, op", [("RNN", "rnn_tanh"), ("RNN relu", "rnn_relu"), ("GRU", "gru"),
                                      ("LSTM", "lstm")])
def test_packed_sequences_take_cpu_lengths_beside_the_modules_device(kind, op):
    """pack_padded_sequence, pad_packed_sequence and the recurrent ops on packed input take CPU int64 lengths and
    batch_sizes beside tensors on the module's device (a GPU too): the meta rerun lets those through, and still
    catches a padded batch left on the CPU."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    @exercise("99_demo", points=1, difficulty=1, minutes=1, hints=["h"])
    def demo_packed(t, fn):
        t.device_check(f"nn.{kind} on the device, a padded batch and lengths on the CPU", packed_on,
                       (fn, kind, t.randn(3, 5, 3, dtype=torch.float32), torch.tensor([2, 5, 1]), "meta"),
                       move_inputs=False)

    def right(rnn, padded, lengths, device):
        packed = pack_padded_sequence(padded.to(device), lengths, batch_first=True, enforce_sorted=False)
        out, state = rnn(packed)
        out, out_lengths = pad_packed_sequence(out, batch_first=True)  # (B, T, H); the lengths come back on the CPU
        h = state[0] if isinstance(state, tuple) else state
        return h[-1] + out[torch.arange(len(out_lengths), device=device), out_lengths.to(device) - 1]

    def padded_left_on_the_cpu(rnn, padded, lengths, device):
        _, state = rnn(pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False))
        return (state[0] if isinstance(state, tuple) else state)[-1]

    try:
        report = evaluate(right, name="demo_packed")
        assert report.passed and not any(c.skipped for c in report.cases), report.text()
        assert_rejects(padded_left_on_the_cpu, "demo_packed", f"`{op}` combines a CPU tensor")
    finally:
        del _EXERCISES["demo_packed"]


class _HalfGradient(torch.autograd.Function):
    """The identity, with half the gradient: right values, a wrong gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad / 2


def test_compare_takes_the_checks_own_readings_of_shapes_errors_and_argument_names():
    @exercise("99_demo", points=1, difficulty=1, minutes=1, hints=["h"])
    def demo_matmul(t, fn):
        x, w = t.randn(4, 3), t.randn(3, 2)
        t.compare("x (4, 3), w (3, 2)", fn, (x, w), torch.matmul, grad=True, names=("x", "w"),
                  shape_mistakes=[("w.T @ x.T is the transpose — x comes first", (2, 4))],
                  advise=lambda message: "pass the tensors themselves" if "'tuple'" in message else None)

    def with_shapes(x, w):
        return x @ tuple(w.shape)

    def in_place(x, w):
        with torch.no_grad():
            w.add_(0.5)
        return x @ (w - 0.5)

    try:
        assert evaluate(lambda x, w: (x[:, :, None] * w[None]).sum(1), name="demo_matmul").passed
        assert_rejects(lambda x, w: w.T @ x.T, "demo_matmul", "got (2, 4) — w.T @ x.T is the transpose")
        assert_rejects(with_shapes, "demo_matmul", "raised TypeError", "\n→ pass the tensors themselves")
        assert_rejects(in_place, "demo_matmul", "you changed w in place")
        assert_rejects(lambda x, w: x @ _HalfGradient.apply(w), "demo_matmul", "the gradient of w: wrong values",
                       "the values are right but not their gradient")
        report = evaluate(lambda x, w: (x @ w).T.contiguous()[:1], name="demo_matmul")  # a shape it does not know
        assert not report.passed and "transpose" not in report.text()
    finally:
        del _EXERCISES["demo_matmul"]


def test_a_values_and_indices_pair_is_told_to_take_its_values():
    from grader.compare import Mismatch, expect_tensor
    with pytest.raises(Mismatch, match=r"got torch.return_types.max — take its .values \(max\(...\).values\)"):
        expect_tensor(torch.ones(2, 3).max(1), torch.ones(2))
