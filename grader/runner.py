"""Running an exercise's cases against a learner's object: the Tester that checks are written with."""
from __future__ import annotations

import dis
import os
import re
import sysconfig
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._pytree import tree_leaves

from grader.compare import Mismatch, expect_tensor, shape_str
from grader.devices import available_devices, to_device
from grader.registry import Exercise
from grader.report import CaseResult, Report, mistake_of
from grader.tracing import ForbiddenCall, MixedDevices, Tracer, current, lifted

PUBLIC_SEED = 0
HIDDEN_SEED_ENV = "TORCHDOJO_HIDDEN_SEED"
HIDDEN_FAILURE = ("failed on hidden inputs (drawn from the instructor's seed): make it work for any input, not "
                  "only the visible cases")

_TORCH_DIR = str(Path(torch.__file__).parent)
_GRADER_DIR = str(Path(__file__).parent)
_STDLIB_DIR = sysconfig.get_paths()["stdlib"]
_RAISE = dis.opmap["RAISE_VARARGS"]


class NotAttempted(BaseException):
    """The learner's code raised the stub's own NotImplementedError."""


class Inconclusive(Exception):
    """A case that cannot decide (say, an op without a meta kernel): skipped, never failed."""


class LearnerError(Exception):
    """The learner's code raised; the message names the error and, where we can tell, the likely cause."""


def is_stub(exc: BaseException) -> bool:
    """True for a NotImplementedError raised by a `raise` statement in the learner's own code.

    NotImplementedError raised inside torch (an op with no kernel for a device) is not a stub: it comes from
    C++ (the innermost frame is not at a raise instruction) or from a file inside torch.
    """
    if not isinstance(exc, NotImplementedError) or exc.__traceback__ is None:
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return code.co_code[tb.tb_lasti] == _RAISE and not code.co_filename.startswith(_TORCH_DIR)


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")  # a terminal's colours and cursor moves

_NOT_DEFINED = ("check the spelling; in a notebook, run the cell that defines it first. A helper of yours (a "
                "function, an import or a variable) in another cell must move into this exercise's answer cell: "
                "graders run only the answer cells")

_IN_PLACE = ("you changed your input in place — compute a new tensor instead (x = x / n, not x /= n or x.div_(n)); "
             "torch.no_grad() would only silence this error and still change the caller's tensor")
_KEEPDIM = ("a reduction over a dim without keepdim=True dropped that dimension, so its result no longer lines up "
            "with the input — pass keepdim=True (x.sum(dim, keepdim=True)) to keep a size-1 dimension there")
_BROADCAST = ("must match the size of tensor", "not broadcastable", "shape mismatch")

_ERROR_ADVICE = [
    (("same device", "is not on the expected device"),
     "tensors on two devices were mixed — create new tensors with device=x.device"),
    (("not compiled with CUDA", "NVIDIA driver", "no CUDA GPUs"),
     "your code moves data to 'cuda' — use the input's device instead of hard-coding one"),
    (("cannot be multiplied",), "the inner dimensions of a matrix product differ — transpose one operand?"),
    (_BROADCAST, "two shapes do not broadcast — print the shapes and line the dimensions up"),
    (("expected scalar type", "expected both vectors to have same dtype", "dtype"),
     "two dtypes were mixed — keep the inputs' dtype (no hard-coded float32 / .float())"),
    (("selected index k out of range", "k not in range for dimension"),
     "topk(k) was asked for more than the dimension holds — use min(k, x.size(dim))"),
    (("a leaf Variable that requires grad",), _IN_PLACE),
    (("does not require grad and does not have a grad_fn",), "the graph was cut — a .detach(), torch.no_grad() "
     "or a conversion to numpy/Python numbers?"),
]


def describe_error(exc: BaseException, dropped_dim: bool = False) -> str:
    """'raised RuntimeError in pairwise_sq_dists (line 4): ...' and, where we can tell, '→ the likely cause'.
    `dropped_dim`: the code reduced over a dim without keepdim=True before it raised."""
    if isinstance(exc, SyntaxError):  # where in the learner's cell, not where Python's parser raised it
        return f"raised {type(exc).__name__} at line {exc.lineno} of your cell: {exc.msg} — fix it and run the cell"
    where = ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith((_TORCH_DIR, _GRADER_DIR, _STDLIB_DIR))]
    if frames:
        where = f" in {frames[-1].name} (line {frames[-1].lineno})"
    message = _ANSI.sub("", str(exc)).strip()
    first_line = (message.splitlines() or [""])[0][:200]
    text = f"raised {type(exc).__name__}{where}: {first_line}".rstrip(": ")
    if isinstance(exc, NameError) and not isinstance(exc, UnboundLocalError):
        return f"{text}\n→ {_NOT_DEFINED}"
    if isinstance(exc, MemoryError):
        return f"{text}\n→ it ran out of memory — build smaller intermediates (a (n, n, d) broadcast is n times " \
               "larger than its inputs) and keep no huge Python lists"
    if dropped_dim and any(n in message for n in _BROADCAST):
        return f"{text}\n→ {_KEEPDIM}"
    for needles, advice in _ERROR_ADVICE:
        if any(n in message for n in needles):
            return f"{text}\n→ {advice}"
    return text


def _shape(shape: tuple) -> tuple[int, ...]:
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)) else tuple(shape)


def invoke_here(forbidden: dict[str, str], fn, args: tuple, kwargs: dict, watch_devices: bool = False):
    """Call learner code in this process under the tracer; map what it raises to the check's exceptions:
    NotAttempted (the stub), Mismatch (a forbidden call), MixedDevices, or LearnerError (anything else)."""
    tracer = Tracer(forbidden, watch_devices=watch_devices)
    try:
        with tracer:
            result = fn(*args, **kwargs)
    except NotImplementedError as e:
        if is_stub(e):
            raise NotAttempted() from None
        raise LearnerError(describe_error(e)) from None
    except ForbiddenCall as e:
        raise _forbidden(e) from None
    except Exception as e:
        raise LearnerError(describe_error(e, tracer.dropped_dim)) from None
    if tracer.violation is not None:  # caught by the learner's own code, still a violation
        raise _forbidden(tracer.violation)
    return result


def _forbidden(call: ForbiddenCall) -> Mismatch:
    # no explicit code: in the batch grader this message comes back from the sandbox as text, and the code made
    # from it must be the same on both paths
    return Mismatch(f"called `{call.name}`{call.via}, which this exercise forbids — {call.advice}")


class Tester:
    """Hands a check its random inputs, runs the learner's code and records each case's verdict."""

    def __init__(self, exercise: Exercise, seed: int = PUBLIC_SEED, hidden: bool = False, invoke=None):
        self.exercise, self.hidden = exercise, hidden
        self.invoke = invoke or invoke_here
        self.gen = torch.Generator().manual_seed(seed)
        self.devices = available_devices()
        self.results: list = []

    # --- random inputs, all from this Tester's own generator -------------------------------------------
    def randn(self, *shape, dtype=torch.float64) -> torch.Tensor:
        """Standard normal of `shape` (given as t.randn(2, 3), t.randn((2, 3)) or t.randn() for a scalar)."""
        return torch.randn(_shape(shape), generator=self.gen, dtype=dtype)

    def rand(self, *shape, dtype=torch.float64) -> torch.Tensor:
        return torch.rand(_shape(shape), generator=self.gen, dtype=dtype)

    def randint(self, low: int, high: int, shape) -> torch.Tensor:
        return torch.randint(low, high, tuple(shape), generator=self.gen)

    def integer(self, low: int, high: int) -> int:
        """A Python int in [low, high)."""
        return int(torch.randint(low, high, (), generator=self.gen))

    def unseen(self, public, low: int, high: int):
        """`public` in the public round; in the hidden round an int from [low, high) instead.

        For inputs so few or so small that a learner could tabulate the public answers (sizes, counts, indices,
        the numbers of a fixed case), pick [low, high) outside the public values: t.unseen(t.integer(6, 12), 13,
        40). It draws only in the hidden round, so the public round's inputs stay as they are.
        """
        return self.integer(low, high) if self.hidden else public

    # --- cases ------------------------------------------------------------------------------------------
    @contextmanager
    def case(self, name: str):
        """Record the block as one case: passed, failed with a diagnosis, or skipped when inconclusive.

        A hidden case records only its number and the verdict: its name and diagnosis would show the hidden
        inputs (and often the expected answer), which a learner could tabulate."""
        hidden = self.hidden
        if hidden:
            name = f"hidden case {len(self.results) + 1}"
        try:
            yield
        except Mismatch as e:
            message = HIDDEN_FAILURE if hidden else e.message if not e.detail else f"{e.message}\n{e.detail}"
            self.results.append(_failed(name, message, hidden, *mistake_of(e.message, e.code)))
        except LearnerError as e:
            code = "missing-keepdim" if _KEEPDIM in str(e) else ""
            self.results.append(_failed(name, HIDDEN_FAILURE if hidden else str(e), hidden, *mistake_of(str(e), code)))
        except Inconclusive as e:
            self.results.append(CaseResult(name, False, "" if hidden else str(e), skipped=True, hidden=hidden))
        else:
            self.results.append(CaseResult(name, True, hidden=hidden))

    def call(self, fn, *args, watch_devices: bool = False, **kwargs):
        """Run learner code with forbidden functions traced; its exceptions become LearnerError.

        `fn` is the learner's object itself or a driver (see run_case) that gets it as first argument. Learner
        code runs only through here, on plain data, so that the grader can move it into a sandbox process
        (by handing the Tester another `invoke`).
        """
        return self.invoke(self.exercise.forbidden, fn, args, kwargs, watch_devices)

    def raises(self, exc_type: type[BaseException], fn, *args, **kwargs) -> BaseException:
        """Expect learner code to raise `exc_type` (the message is returned for further checks)."""
        try:
            self.call(fn, *args, **kwargs)
        except LearnerError as e:
            if str(e).startswith(f"raised {exc_type.__name__}"):
                return e
            raise Mismatch(f"should raise {exc_type.__name__}, but {e}", code="wrong-exception") from None
        raise Mismatch(f"should raise {exc_type.__name__}, but returned normally — check the arguments first and "
                       f"raise {exc_type.__name__}(\"...\") with a message that says what is wrong",
                       code="missing-raise")

    def compare(self, name: str, fn, args: tuple, ref, *, kwargs: dict | None = None, atol: float = 1e-6,
                rtol: float = 1e-5, grad: bool = False, wrt: tuple[int, ...] | None = None,
                explain=None, shape_mistakes=None, advise=None, names: tuple[str, ...] | None = None,
                device_check: bool = True) -> None:
        """One case per device: fn(*args) must match ref(*args) exactly in type, shape, dtype and device,
        leave its inputs unchanged, and (grad=True) give the reference's gradients for every float tensor in
        args (or only in args[i] for i in `wrt`).

        The check's own diagnoses, all optional:
        - `explain(got, expected, args)` may return a more specific diagnosis of wrong values;
        - `shape_mistakes`, [(diagnosis, the shape that mistake gives)], names a wrong shape it recognises;
        - `advise(message)` may return the check's reading of an error the learner's code raised (message:
          'raised TypeError in f (line 3): ...', with the engine's own '→' line if it has one), added as a '→' line;
        - `names` are what to call args[0], args[1], ... in messages ("you changed weight in place"), not
          "input 1".
        The meta-device rerun (~20 ms) can be left to a representative few of many similar cases with
        device_check=False.
        """
        kwargs = kwargs or {}
        expected = ref(*args, **kwargs)
        upstream = self.randn(*expected.shape, dtype=expected.dtype) if grad else None  # a random dL/d(out)
        ref_grads = run_case(ref, to_device(args, "cpu"), kwargs, upstream, wrt)["grads"] if grad else None
        for device in self.devices:
            with self.case(f"{device}: {name}"):
                if device == "mps" and any(isinstance(x, torch.Tensor) and x.dtype == torch.float64
                                           for x in tree_leaves(args)):
                    raise Inconclusive("mps has no float64")
                try:
                    run = self.call(run_case, fn, to_device(args, device), to_device(kwargs, device),
                                    None if upstream is None else upstream.to(device), wrt)
                except LearnerError as e:
                    advice = _advise(advise, str(e))
                    if advice:
                        raise LearnerError(f"{e}\n→ {advice}") from None
                    raise
                if run["mutated"]:
                    what = _input_name(args, names, run["mutated"][0], f"input {run['mutated'][0]}")
                    raise Mismatch(f"you changed {what} in place — compute a new tensor instead (x = x + 1, not "
                                   "x += 1 or x.add_(1)): the caller still needs its input",
                                   code="input-modified-in-place")
                got = run["out"]
                try:
                    expect_tensor(got, expected, atol=atol, rtol=rtol, device=device)
                except Mismatch as e:
                    shape = _known_shape(shape_mistakes, got, expected, device)
                    if shape:
                        raise Mismatch(f"the result: expected shape {shape_str(expected.shape)}, got "
                                       f"{shape_str(got.shape)} — {shape}") from None
                    better = _explain(explain, got, expected, args, device)
                    if not better and run.get("dropped_dim") and isinstance(got, torch.Tensor) and expected.ndim \
                            and got.ndim >= expected.ndim and got.numel() > expected.numel():
                        better = _KEEPDIM  # (n,) against (n, 1) broadcast into (n, n) silently
                    if better:
                        raise Mismatch(f"{e.message}\n→ {better}", e.detail,
                                       code="missing-keepdim" if better == _KEEPDIM else "") from None
                    raise
                if grad:
                    if run["grads"] is None:
                        raise Mismatch("the result does not track gradients — a .detach(), torch.no_grad(), "
                                       ".item() or a round trip through numpy or Python lists cut the graph: "
                                       "build it from torch operations on the inputs", code="no-gradient")
                    for i, (g, r) in enumerate(zip(run["grads"], ref_grads)):
                        old = wrt[i] if wrt and len(wrt) == len(ref_grads) else i
                        what = _input_name(args, names, i, f"input {old}", wrt, floats=True)
                        _expect_grad(g, r, atol, rtol, device, what)
        if device_check and "cuda" not in self.devices:
            self.device_check(name, fn, args, kwargs)

    def device_check(self, name: str, fn, args: tuple, kwargs: dict | None = None, move_inputs: bool = True) -> None:
        """Without CUDA, rerun with inputs on the `meta` device: tensors made on the CPU show up as mixed
        devices or as a CPU result, which on a GPU would be an error. Inconclusive runs are skipped.

        move_inputs=False hands `args` over as they are, for a driver that takes a device itself (give it
        "meta"): a batch left on the CPU, or a moved copy thrown away (x.to(device) not assigned), then meets
        meta weights and shows up as mixed devices."""
        if move_inputs and not any(isinstance(x, torch.Tensor) for x in tree_leaves((args, kwargs))):
            return
        with self.case(f"device check: {name}"):
            move = (lambda v: to_device(v, "meta")) if move_inputs else (lambda v: v)
            try:
                got = self.call(fn, *move(args), watch_devices=True, **move(kwargs or {}))
            except MixedDevices as e:
                where, fix = ("input", "create new tensors with device=x.device (or x.new_*/*_like)") \
                    if move_inputs else ("target", "move every tensor to `device` and keep what .to() returns "
                                         "(x = x.to(device): .to() makes a new tensor, it does not move x itself), "
                                         "and create new tensors with device=device")
                raise Mismatch(f"`{e.name}` combines a CPU tensor with a tensor on the {where}'s device: on a GPU "
                               f"this fails — {fix}", code="wrong-device")
            except (LearnerError, Mismatch) as e:
                raise Inconclusive(f"could not run on the meta device: {e}") from None
            _expect_on_meta(got)


def _failed(name: str, message: str, hidden: bool, code: str, label: str) -> CaseResult:
    """A failed case with its diagnosis: a hidden case keeps the code (it can be counted), never the words."""
    return CaseResult(name, False, message, hidden=hidden, mistake=code, label="" if hidden else label)


@contextmanager
def untraced():
    """Inside a driver: torch calls made here are the check's bookkeeping, not the learner's (forbidden Python
    objects work again, too)."""
    with lifted():
        if torch._C._len_torch_function_stack() == 0:
            yield
        else:
            with torch.overrides._pop_mode_temporarily():
                yield


def run_case(fn, args: tuple, kwargs: dict, upstream: torch.Tensor | None = None,
             wrt: tuple[int, ...] | None = None) -> dict:
    """Driver: fn(*args, **kwargs), the indices of tensor inputs it modified and, given an upstream gradient,
    the gradients of (out * upstream).sum() for the float tensors in args (only args[i] for i in `wrt`, if
    given), None when out has no graph.

    Drivers are module-level functions whose first argument is the learner's object; they take and return
    plain data (tensors, numbers, strings, devices, and lists/tuples/dicts of them), so that a grader can run
    them in another process than the one that judges the result.
    """
    with untraced():
        inputs = [x for x in tree_leaves(args) if isinstance(x, torch.Tensor)]
        chosen = inputs if wrt is None else [x for i in wrt for x in tree_leaves(args[i])
                                             if isinstance(x, torch.Tensor)]
        wrt = [x.requires_grad_(True) for x in chosen if x.dtype.is_floating_point] if upstream is not None else []
        before = [x.detach().clone() for x in inputs]
    out = fn(*args, **kwargs)
    with untraced():
        mutated = [i for i, (x, b) in enumerate(zip(inputs, before)) if not unchanged(x.detach(), b)]
        tracks = isinstance(out, torch.Tensor) and out.requires_grad and upstream is not None \
            and out.shape == upstream.shape
    grads = None
    if tracks:
        grads = torch.autograd.grad((out * upstream).sum(), wrt, allow_unused=True)
        with untraced():
            grads = [torch.zeros_like(x) if g is None else g.detach() for x, g in zip(wrt, grads)]
    # plain tensors come back without their graph; anything else (a Parameter, a subclass) as it is, to be judged
    return {"out": out.detach() if type(out) is torch.Tensor else out, "mutated": mutated, "grads": grads,
            "dropped_dim": bool(current() and current().dropped_dim)}


def unchanged(x: torch.Tensor, before: torch.Tensor) -> bool:
    """Same shape and values, nan where there was nan (torch.equal counts nan as changed)."""
    if x.shape != before.shape or x.dtype != before.dtype:
        return False
    if x.device.type == "meta":
        return True
    same = x == before
    if x.is_floating_point() or x.is_complex():
        same |= x.isnan() & before.isnan()
    return bool(same.all())


def _expect_on_meta(result) -> None:
    """Every tensor of a meta-device rerun's result must be on meta, the inputs' device."""
    for x in tree_leaves(result):
        if isinstance(x, torch.Tensor) and x.device.type != "meta":
            raise Mismatch(f"the result is on {x.device.type}, not on the input's device: on a GPU it would stay "
                           "on the CPU — create it with device=x.device (or use *_like / x.new_*)",
                           code="wrong-device")


def _expect_grad(got, expected, atol: float, rtol: float, device: str, what: str) -> None:
    """The gradient of one input (`what` names it: 'input 1', 'weight') must match the reference's."""
    try:
        expect_tensor(got, expected, atol=atol * 10, rtol=rtol * 10, device=device, what=f"the gradient of {what}")
    except Mismatch as e:
        if isinstance(got, torch.Tensor) and not torch.isfinite(got).all() and torch.isfinite(expected).all():
            raise Mismatch(f"{e.message}\n→ the value is finite but the gradient is not — an operation whose "
                           "derivative is infinite at these inputs (sqrt or a power below 1 at 0, a division by "
                           "0), or an overflowing branch of torch.where (it back-propagates nan even where it is "
                           "not chosen): keep every intermediate finite (clamp before sqrt, exp(-|x|))",
                           e.detail) from None
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and "wrong values" in e.message:
            raise Mismatch(f"{e.message}\n→ the values are right but not their gradient — compute the result with "
                           "differentiable torch operations on the inputs (no in-place writes into a tensor made "
                           "with torch.no_grad(), no .detach()) and let autograd do the rest", e.detail) from None
        raise


def _input_name(args: tuple, names, index: int, default: str, wrt=None, floats: bool = False) -> str:
    """What to call the `index`-th tensor of args (with `floats`, the index-th float tensor of args[i] for i in
    `wrt`, the tensors run_case differentiates): its argument's name in `names`, else `default`."""
    if not names:
        return default
    owners = [i for i in (range(len(args)) if wrt is None else wrt) for x in tree_leaves(args[i])
              if isinstance(x, torch.Tensor) and (x.dtype.is_floating_point or not floats)]
    return names[owners[index]] if index < len(owners) and owners[index] < len(names) else default


def _explain(explain, got, expected, args, device: str) -> str | None:
    """The check's own diagnosis of wrong values, when it has one and the result is comparable at all (a plain
    tensor on the inputs' device, of the expected shape and dtype)."""
    if explain is None or type(got) is not torch.Tensor or got.device.type != torch.device(device).type \
            or got.shape != expected.shape or got.dtype != expected.dtype:
        return None
    try:
        return explain(got.detach().cpu(), expected, args)
    except Exception:
        return None


def _known_shape(shape_mistakes, got, expected, device: str) -> str | None:
    """The diagnosis of the first (diagnosis, shape) of `shape_mistakes` whose shape is the wrong shape of `got`."""
    if not shape_mistakes or type(got) is not torch.Tensor or got.device.type != torch.device(device).type \
            or got.shape == expected.shape:
        return None
    return next((why for why, shape in shape_mistakes if tuple(shape) == tuple(got.shape)), None)


def _advise(advise, message: str) -> str | None:
    """The check's reading of an error the learner's code raised, when it has one."""
    if advise is None:
        return None
    try:
        return advise(message)
    except Exception:
        return None


def seeds() -> list[tuple[int, bool]]:
    """The public round, then a hidden round when the instructor sets TORCHDOJO_HIDDEN_SEED."""
    rounds = [(PUBLIC_SEED, False)]
    hidden = os.environ.get(HIDDEN_SEED_ENV, "").strip()
    if hidden:
        rounds.append((int(hidden), True))
    return rounds


@contextmanager
def one_thread():
    """Check cases are tiny: with several intra-op threads, CPU kernels spend most of their time waiting for
    each other (10x slower on a busy 2-core machine). The learner's setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_exercise(exercise: Exercise, obj, invoke=None, rounds: list[tuple[int, bool]] | None = None):
    """The rounds (default: seeds()) of the exercise's check against `obj`, learner code run through
    `invoke`, as one Report."""
    results, hidden = [], False
    try:
        # Checks draw from their own generator; fork_rng keeps the learner's global RNG state as it was.
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())), torch.enable_grad(), one_thread():
            for seed, hidden in rounds or seeds():
                tester = Tester(exercise, seed, hidden, invoke)
                try:
                    exercise.check(tester, obj)
                finally:
                    results += tester.results
    except NotAttempted:
        return Report(exercise.name, "not_attempted", exercise.points)
    except Exception as e:  # the learner's object broke the check outside any case
        error = f"the check stopped on hidden inputs: {HIDDEN_FAILURE}" if hidden else describe_error(e)
        return Report(exercise.name, "failed", exercise.points, results, error=error)
    ran = [r for r in results if not r.skipped]
    ok = bool(ran) and all(r.passed for r in ran)
    return Report(exercise.name, "passed" if ok else "failed", exercise.points, results,
                  error="" if ran else "no case could run")
