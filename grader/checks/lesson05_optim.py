"""Checks for 05_optim: SGD, AdamW, Adagrad, gradient clipping, a warm-up + cosine schedule, gradient
accumulation.

The optimizers are judged by whole trajectories: the learner's class and torch.optim's take the same initial
parameters, param groups and sequence of gradients, and every parameter is compared after every step. When they
part, plain-loop variants of the update that each make one classic mistake (a "mutant") name the likely cause.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from grader.compare import Mismatch, expect_tensor, expect_value
from grader.registry import exercise
from grader.runner import LearnerError, untraced
from grader.tracing import ForbiddenCall

# The trusted side's own references (the engine makes forbidden classes refuse only while learner code runs).
_TORCH_SGD = torch.optim.SGD
_TORCH_ADAM = torch.optim.Adam
_TORCH_ADAMW = torch.optim.AdamW
_TORCH_ADAGRAD = torch.optim.Adagrad
_TORCH_CLIP = torch.nn.utils.clip_grad_norm_

# Forbidden Python objects, by import path: the classes, their functional forms, and what both run inside (so
# that a private helper called directly refuses too). The engine refuses every alias of them.
_OPTIM_ADVICE = "subclass torch.optim.Optimizer and write the update yourself with tensor operations"


def _refused(*paths: str, advice: str = _OPTIM_ADVICE) -> dict[str, str]:
    return {path: advice for path in paths}


_FORBID_SGD = _refused("torch.optim.SGD", "torch.optim.sgd.sgd", "torch.optim.sgd._single_tensor_sgd",
                       "torch.optim.sgd._multi_tensor_sgd", "torch.optim.sgd._fused_sgd")
_FORBID_ADAM = _refused("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.adam.adam", "torch.optim.adamw.adamw",
                        "torch.optim.adam._single_tensor_adam", "torch.optim.adam._multi_tensor_adam",
                        "torch.optim.adam._fused_adam")
_FORBID_ADAGRAD = _refused("torch.optim.Adagrad", "torch.optim.adagrad.adagrad",
                           "torch.optim.adagrad._single_tensor_adagrad", "torch.optim.adagrad._multi_tensor_adagrad",
                           "torch.optim.adagrad._fused_adagrad")
_FORBID_CLIP = _refused("torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_norm",
                        "torch.nn.utils.clip_grads_with_norm_", "torch.nn.utils.get_total_norm",
                        advice="compute the total norm and scale the gradients yourself")

# which: torch's classes the learner's must not inherit from (the most derived first: AdamW subclasses Adam)
_OWN = {"sgd": (_TORCH_SGD,), "adamw": (_TORCH_ADAMW, _TORCH_ADAM), "adagrad": (_TORCH_ADAGRAD,)}


def _expect_own_optimizer(cls, which: str) -> None:
    if not isinstance(cls, type):
        raise TypeError(f"expected a class, got {type(cls).__name__} — write `class ...(torch.optim.Optimizer):`")
    for parent in _OWN[which]:
        if issubclass(cls, parent):  # the name alone in backticks, as for a call: `torch.optim.SGD`
            raise ForbiddenCall(f"torch.optim.{parent.__name__}", f"your class inherits from it; {_OPTIM_ADVICE}")
    if not issubclass(cls, torch.optim.Optimizer):
        raise TypeError(f"{cls.__name__} should subclass torch.optim.Optimizer")


# --- optimizer trajectories ---------------------------------------------------------------------------------

def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return repr(value)


def _plain_state_dict(sd: dict, n: int) -> dict:
    """An optimizer state_dict as plain data: per-parameter state as a list (None: no entry), groups as dicts."""
    state = sd.get("state", {})
    return {"state": [None if i not in state else {str(k): _plain(v) for k, v in state[i].items()}
                      for i in range(n)],
            "param_groups": [{str(k): _plain(v) for k, v in g.items()} for g in sd.get("param_groups", [])]}


def _trajectory(cls, spec: dict) -> dict:
    """Build cls on fresh leaves, feed the spec's gradients one step at a time; record everything after each."""
    with untraced():
        leaves = [[p.detach().clone().requires_grad_(True) for p in g] for g in spec["params"]]
        flat = [p for g in leaves for p in g]
    make = lambda: cls([{"params": g, **o} for g, o in zip(leaves, spec["options"])], **spec["defaults"])
    optimizer = make()
    out = {"params": [], "grad_changed": [], "saved": None}
    for k, step_grads in enumerate(spec["grads"]):
        if k == spec.get("reload_at"):
            saved = copy.deepcopy(optimizer.state_dict())  # as if written to disk and read back
            with untraced():
                out["saved"] = _plain_state_dict(saved, len(flat))
            optimizer = make()
            optimizer.load_state_dict(saved)
        with untraced():
            given = [g for gs in step_grads for g in gs]
            handed = [None if g is None else g.clone() for g in given]
            for p, h in zip(flat, handed):
                p.grad = h
        optimizer.step()
        with untraced():
            out["params"].append([p.detach().clone() for p in flat])
            changed = [h is not None and (p.grad is not h or (h.device.type != "meta" and not torch.equal(h, g)))
                       for p, h, g in zip(flat, handed, given)]
            out["grad_changed"].append(any(changed))
    with untraced():
        out["state"] = _plain_state_dict(optimizer.state_dict(), len(flat))["state"]
    return out


def optimizer_run(cls, which: str, spec: dict) -> dict:
    """Driver: the learner's optimizer class over the spec's steps (which: "sgd", "adamw" or "adagrad")."""
    _expect_own_optimizer(cls, which)
    return _trajectory(cls, spec)


def optimizer_final(cls, which: str, spec: dict) -> list:
    """Driver for the meta-device check: the parameters after the last step."""
    return optimizer_run(cls, which, spec)["params"][-1]


def construct(cls, which: str, kwargs: dict) -> None:
    """Driver: only construct the optimizer (for the invalid hyper-parameter cases)."""
    _expect_own_optimizer(cls, which)
    cls([torch.zeros(3, requires_grad=True)], **kwargs)


def fresh_state(cls, which: str, values: list, kwargs: dict, second: dict | None = None) -> dict:
    """Driver: the state_dict of an optimizer right after its constructor (two param groups, the second with
    the options `second`), as plain data."""
    _expect_own_optimizer(cls, which)
    return _fresh_state(cls, values, kwargs, second)


def _fresh_state(cls, values: list, kwargs: dict, second: dict | None = None) -> dict:
    with untraced():
        leaves = [v.detach().clone().requires_grad_(True) for v in values]
    sd = cls([{"params": leaves[:2]}, {"params": leaves[2:], **(second or {})}], **kwargs).state_dict()
    with untraced():
        return _plain_state_dict(sd, len(leaves))


def closure_run(cls, which: str, kwargs: dict, start: torch.Tensor) -> dict:
    """Driver: one step(closure) on a weighted quadratic; what step returned and the parameter after it."""
    _expect_own_optimizer(cls, which)
    return _closure_step(cls, kwargs, start)


def _closure_step(cls, kwargs: dict, start: torch.Tensor) -> dict:
    with untraced():
        p = start.detach().clone().requires_grad_(True)
        weights = torch.arange(1.0, p.numel() + 1, dtype=p.dtype, device=p.device).reshape(p.shape)
    optimizer = cls([p], **kwargs)

    def closure():
        optimizer.zero_grad()
        loss = (weights * p * p).sum()
        loss.backward()
        return loss

    out = optimizer.step(closure)
    with untraced():
        return {"returned": out.detach().clone() if isinstance(out, torch.Tensor) else _plain(out),
                "param": p.detach().clone()}


def _spec(t, shapes_per_group, options, defaults, steps, dtype=torch.float64, none_at=(), never=(),
          reload_at=None, scale=1.0):
    """Initial values and `steps` gradients. none_at: flat indices whose grad is None every third step;
    never: flat indices that never get a gradient."""
    params = [[t.randn(*s, dtype=dtype) for s in shapes] for shapes in shapes_per_group]
    grads = []
    for step in range(steps):
        step_grads, i = [], 0
        for shapes in shapes_per_group:
            gs = []
            for s in shapes:
                skip = i in never or (i in none_at and step % 3 == 1)
                gs.append(None if skip else t.randn(*s, dtype=dtype) * scale)
                i += 1
            step_grads.append(gs)
        grads.append(step_grads)
    return {"params": params, "options": options, "defaults": defaults, "grads": grads, "reload_at": reload_at}


def _to(spec: dict, device: str, dtype=None) -> dict:
    move = lambda x: None if x is None else x.to(device=device, dtype=dtype or x.dtype)
    return {**spec, "params": [[move(p) for p in g] for g in spec["params"]],
            "grads": [[[move(x) for x in gs] for gs in step] for step in spec["grads"]]}


def _where(spec: dict, i: int) -> str:
    for g, group in enumerate(spec["params"]):
        if i < len(group):
            return f"param group {g}, parameter {i}" if len(spec["params"]) > 1 else f"parameter {i}"
        i -= len(group)
    return f"parameter {i}"


def _close(a, b, tol) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and \
        torch.allclose(a.detach().cpu(), b, atol=tol[0], rtol=tol[1])


def _matches(got_params: list, traj: list, tol) -> bool:
    return all(_close(g, r, tol) for gs, rs in zip(got_params, traj) for g, r in zip(gs, rs))


def _diagnose(got_params, spec, mutants: dict, tol) -> str | None:
    for message, loop in mutants.items():
        try:
            if _matches(got_params, loop(spec), tol):
                return message
        except Exception:
            continue
    return None


def _compare_run(got, ref, spec, *, who: str, device: str, tol, mutants: dict, hint: str) -> None:
    """Every parameter after every step, then the per-parameter state at the end."""
    if not isinstance(got, dict) or len(got.get("params", [])) != len(ref["params"]):
        raise Mismatch("the optimizer did not run all steps")
    # state dtypes first: a float32 buffer for float64 parameters explains small differences best
    for i, (g, r) in enumerate(zip(got["state"], ref["state"])):
        for key, value in (g or {}).items():
            if isinstance(value, torch.Tensor) and r and isinstance(r.get(key), torch.Tensor) and key != "step" \
                    and value.dtype != r[key].dtype:
                raise Mismatch(f"state[{key!r}] of {_where(spec, i)} is {value.dtype}, the parameter is "
                               f"{r[key].dtype} — create state with torch.zeros_like(p) / p.clone() so it keeps "
                               "the parameter's dtype and device")
    for k, (gs, rs) in enumerate(zip(got["params"], ref["params"])):
        for i, (g, r) in enumerate(zip(gs, rs)):
            if _close(g, r, tol):
                continue
            reloaded = spec.get("reload_at") is not None and k >= spec["reload_at"]
            expect_tensor(g, r, device=device, atol=math.inf,  # type, device, shape, dtype, nan/inf only
                          what=f"step {k + 1}: {_where(spec, i)}")
            before = got["params"][k - 1][i] if k else [p for ps in spec["params"] for p in ps][i]
            if _flat_grads(spec, k)[i] is None and not torch.equal(g.detach().cpu(), before.detach().cpu()):
                raise Mismatch(f"step {k + 1} of {len(ref['params'])}: {_where(spec, i)} had grad=None but moved "
                               "— skip it (continue when p.grad is None): torch leaves such a parameter, and its "
                               "state, as they are")
            error = (g.detach().cpu() - r).abs().max().item()
            text = f"step {k + 1} of {len(ref['params'])}: {_where(spec, i)} differs from {who}"
            detail = f"largest error {error:.3g}"
            if reloaded and _matches(got["params"][:spec["reload_at"]], ref["params"][:spec["reload_at"]], tol):
                raise Mismatch(f"{text}, right after a fresh optimizer loaded the state_dict saved at step "
                               f"{spec['reload_at']} — keep all per-parameter state in self.state[p] (that, and "
                               "self.param_groups, is what state_dict() saves and load_state_dict() restores)",
                               detail)
            why = _diagnose(got["params"], spec, mutants, tol) or hint
            raise Mismatch(f"{text}\n→ {why}", detail)
    if any(got["grad_changed"]):
        raise Mismatch("step() changed p.grad — compute the update in new tensors (d_p = p.grad + wd * p), "
                       "never p.grad.add_(...) or p.grad = ...: the gradient belongs to the caller")
    for i, (g, r) in enumerate(zip(got["state"], ref["state"])):
        g = {k: v for k, v in (g or {}).items() if v is not None}
        if not r:
            if g:
                raise Mismatch(f"{_where(spec, i)} never had a gradient, yet has state {sorted(g)} — skip "
                               "parameters whose .grad is None before touching self.state[p]")
            continue
        for key, value in r.items():
            if value is None:
                continue
            if not g and _step_of(r) == 0:
                raise Mismatch(f"self.state[p] of {_where(spec, i)}, which never had a gradient, is empty; {who} "
                               f"creates {sorted(k for k, v in r.items() if v is not None)} for every parameter in "
                               "its constructor — create the state in __init__, after super().__init__(...), so "
                               "that it exists (and state_dict() saves it) before the first step")
            if not g:
                raise Mismatch(f"self.state[p] of {_where(spec, i)} is empty; {who} keeps "
                               f"{sorted(k for k, v in r.items() if v is not None)} there — keep per-parameter "
                               "state in self.state[p] under these keys (not in attributes of your own)")
            if key not in g:
                raise Mismatch(f"self.state[p] of {_where(spec, i)} has keys {sorted(g)}; {who} keeps "
                               f"{sorted(k for k, v in r.items() if v is not None)} — use the same keys, so that "
                               "state_dicts are interchangeable")
            if key == "step":
                got_step = g[key].item() if isinstance(g[key], torch.Tensor) and g[key].numel() == 1 else g[key]
                nones = sum(_flat_grads(spec, k)[i] is None for k in range(len(spec["grads"])))
                if nones and isinstance(got_step, (int, float)) and float(got_step) > float(value):
                    raise Mismatch(f"state['step'] of {_where(spec, i)} is {got_step!r}, expected {float(value):g}: "
                                   f"this parameter had grad=None at {nones} of {len(spec['grads'])} steps but its "
                                   "step advanced — skip it (continue when p.grad is None)")
                if not isinstance(got_step, (int, float)) or float(got_step) != float(value):
                    raise Mismatch(f"state['step'] of {_where(spec, i)} is {got_step!r}, expected "
                                   f"{float(value):g} — count the steps each parameter actually took")
            else:
                try:
                    expect_tensor(g[key], value.to(g[key].device) if isinstance(g[key], torch.Tensor) else value,
                                  atol=tol[0], rtol=tol[1], what=f"state[{key!r}] of {_where(spec, i)}")
                except Mismatch as e:
                    if "wrong values" not in e.message:
                        raise
                    raise Mismatch(f"{e.message}\n→ the parameters match {who}'s, but the state kept under "
                                   f"{key!r} does not: store there exactly what {who} stores", e.detail) from None


def _flat_grads(spec: dict, k: int) -> list:
    """The gradients of step k, one per parameter across the groups (None: no gradient)."""
    return [g for gs in spec["grads"][k] for g in gs]


def _step_of(state: dict | None):
    """A per-parameter state's step count as a float (None when there is none)."""
    step = (state or {}).get("step")
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        return float(step)
    return float(step) if isinstance(step, (int, float)) else None


def _continue_in_torch(torch_cls, got, ref, spec, tol) -> None:
    """Load the learner's mid-run state_dict into torch.optim's class and continue: it must follow torch's run."""
    k0 = spec["reload_at"]
    saved = got.get("saved")
    if not saved:
        raise Mismatch("no state_dict was saved")
    leaves = [p.detach().cpu().clone().requires_grad_(True) for p in got["params"][k0 - 1]]
    groups, i = [], 0
    for g, o in zip(spec["params"], spec["options"]):
        groups.append({"params": leaves[i:i + len(g)], **o})
        i += len(g)
    opt = torch_cls(groups, **spec["defaults"])
    name = f"torch.optim.{torch_cls.__name__}"
    try:
        state = {i: {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
                 for i, s in enumerate(saved["state"]) if s}
        opt.load_state_dict({"state": state, "param_groups": copy.deepcopy(saved["param_groups"])})
        for k in range(k0, len(spec["grads"])):
            for p, g in zip(leaves, [g for gs in spec["grads"][k] for g in gs]):
                p.grad = None if g is None else g.clone()
            opt.step()
            for j, (p, r) in enumerate(zip(leaves, ref["params"][k])):
                if not _close(p.detach(), r, tol):
                    raise Mismatch(f"{name}, loaded with your state_dict from step {k0}, takes a different step "
                                   f"{k + 1} for {_where(spec, j)} — keep the state under {name}'s keys and "
                                   "the group options under the constructor's argument names")
    except Mismatch:
        raise
    except Exception as e:
        raise Mismatch(f"{name} could not continue from your state_dict ({type(e).__name__}: {e}) — keep the "
                       f"state under {name}'s keys and the group options under the constructor's argument "
                       "names") from None


def _tolerance(device: str):
    return (1e-5, 1e-4) if device == "mps" else (1e-10, 1e-8)


def _run_cases(t, fn, torch_cls, which: str, cases, mutants, invalid, valid, closure_kwargs: dict,
               first=None) -> None:
    """The trajectory cases on every device, step(closure), the (in)valid hyper-parameters and a meta-device
    rerun; `first(t, fn)` adds cases of the exercise's own before the trajectories."""
    if first is not None:
        first(t, fn)
    who = f"torch.optim.{torch_cls.__name__}"
    for label, spec, hint in cases:
        ref = _trajectory(torch_cls, spec)
        for device in t.devices:
            with t.case(f"{device}: {label}"):
                dtype = torch.float32 if device == "mps" else None
                try:
                    got = t.call(optimizer_run, fn, which, _to(spec, device, dtype))
                except LearnerError as e:
                    if _has_none_grad(spec) and "NoneType" in str(e):
                        raise Mismatch(f"{e}\n→ a parameter has grad None — skip it (if p.grad is None: "
                                       "continue) before reading p.grad or touching self.state[p]") from None
                    raise
                _compare_run(got, ref if dtype is None else _trajectory(torch_cls, _to(spec, "cpu", dtype)),
                             spec, who=who, device=device, tol=_tolerance(device), mutants=mutants, hint=hint)
                if spec.get("reload_at") is not None:
                    _continue_in_torch(torch_cls, got, ref, spec, _tolerance(device))
    start = t.randn(2, 3)
    ref = _closure_step(torch_cls, closure_kwargs, start)
    with t.case(f"step(closure) with {closure_kwargs}: runs the closure with gradients enabled and returns its loss"):
        got = t.call(closure_run, fn, which, closure_kwargs, start)
        try:
            expect_tensor(got["param"], ref["param"], atol=1e-10, rtol=1e-8,
                          what="the parameter after step(closure)")
        except Mismatch as e:
            raise Mismatch(f"{e.message}\n→ {_closure_diagnosis(got['param'], closure_kwargs, start, mutants)}",
                           e.detail) from None
        if not isinstance(got["returned"], torch.Tensor):
            raise Mismatch(f"step(closure) returned {got['returned']!r}; it should return the closure's loss "
                           "(loss = None; if closure is not None: with torch.enable_grad(): loss = closure())")
        try:
            expect_tensor(got["returned"], ref["returned"], what="the loss step(closure) returned")
        except Mismatch as e:
            raise Mismatch(f"{e.message}\n→ return the value the closure returned, computed before the update",
                           e.detail) from None
    for label, kwargs in invalid:
        with t.case(f"{label} raises ValueError"):
            t.raises(ValueError, construct, fn, which, kwargs)
    for label, kwargs in valid:
        with t.case(f"{label} is valid (no error)"):
            try:
                t.call(construct, fn, which, kwargs)
            except LearnerError as e:
                if not str(e).startswith("raised ValueError"):
                    raise
                zeros = [k for k, v in kwargs.items() if v == 0 and not isinstance(v, bool)]
                why = f"0 is a valid {', '.join(zeros)} in {who}; reject only negative values" if zeros else \
                    f"{who} accepts {label}; raise ValueError only where it does"
                raise Mismatch(f"{e}\n→ {why}") from None
    if "cuda" not in t.devices:
        label, spec, _ = cases[-2]  # the param-group case
        # a few steps are enough to see where state is created (meta kernels run in Python: slow)
        t.device_check(label, optimizer_final, (fn, which, {**spec, "grads": spec["grads"][:2], "reload_at": None}))


def _has_none_grad(spec: dict) -> bool:
    return any(g is None for step_grads in spec["grads"] for gs in step_grads for g in gs)


def _closure_diagnosis(got_param, kwargs: dict, start: torch.Tensor, mutants: dict) -> str:
    """Why one step(closure) on the quadratic went wrong: a classic mistake of the update, or the closure."""
    with torch.no_grad():
        weights = torch.arange(1.0, start.numel() + 1, dtype=start.dtype).reshape(start.shape)
        spec = {"params": [[start]], "options": [{}], "defaults": kwargs, "grads": [[[2 * weights * start]]]}
    if isinstance(got_param, torch.Tensor) and got_param.shape == start.shape and got_param.dtype == start.dtype:
        why = _diagnose([[got_param]], spec, mutants, (1e-10, 1e-8))
        if why:
            return why
    return ("step(closure) should take the same step as step() without a closure (if the trajectory cases "
            "above fail too, fix those first), after calling the closure under torch.enable_grad(): it "
            "recomputes p.grad")


# --- SGD: a plain-loop model of the update with one knob per classic mistake --------------------------------

_SGD_DEFAULTS = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)


def _flat_options(spec, base, mistake=""):
    """Each parameter's options, from its group (mistake "defaults": all from the constructor's defaults,
    "lr_defaults" / "eps_defaults": only lr / eps from them)."""
    defaults = {**base, **spec["defaults"]}
    pick = {"defaults": lambda o: defaults, "lr_defaults": lambda o: {**defaults, **o, "lr": defaults["lr"]},
            "eps_defaults": lambda o: {**defaults, **o, "eps": defaults["eps"]}}
    group = pick.get(mistake, lambda o: {**defaults, **o})
    return [group(o) for g, o in zip(spec["params"], spec["options"]) for _ in g]


_GROUP_ADVICE = ("read each option from its param group inside step() (group['lr'], ...), not from "
                 "self.defaults or the constructor's arguments: a group's own options and a scheduler's changes "
                 "live in self.param_groups")


def _sgd_loop(spec, mistake=""):
    opts = _flat_options(spec, _SGD_DEFAULTS, mistake)
    params = [p.clone() for g in spec["params"] for p in g]
    bufs, traj = [None] * len(params), []
    for step_grads in spec["grads"]:
        for i, g in enumerate(x for gs in step_grads for x in gs):
            o, p = opts[i], params[i]
            if g is None:
                if mistake != "none_as_zero":
                    continue
                g = torch.zeros_like(p)
            if o["maximize"] and mistake not in ("no_maximize", "maximize_late"):
                g = -g
            if o["weight_decay"] and mistake not in ("no_wd", "wd_late"):
                g = g + o["weight_decay"] * p
            if o["momentum"]:
                if bufs[i] is None or mistake == "no_state":
                    bufs[i] = g.clone() * (1 - o["dampening"] if mistake == "damp_first" else 1)
                else:
                    bufs[i] = o["momentum"] * bufs[i] + (1 - o["dampening"]) * g
                g = g + o["momentum"] * bufs[i] if o["nesterov"] and mistake != "no_nesterov" else bufs[i]
            if o["weight_decay"] and mistake == "wd_late":
                g = g + o["weight_decay"] * p
            sign = -1 if o["maximize"] and mistake == "maximize_late" else 1
            params[i] = p - sign * o["lr"] * g
        traj.append([p.clone() for p in params])
    return traj


_SGD_MUTANTS = {
    "weight decay is added after the momentum buffer — add weight_decay * p to the gradient first, "
    "then update the buffer with that": lambda s: _sgd_loop(s, "wd_late"),
    "weight_decay is ignored — add weight_decay * p to the gradient": lambda s: _sgd_loop(s, "no_wd"),
    "the first momentum buffer must be a plain copy of the gradient (no dampening, no zeros start): "
    "buf = d_p.clone() on the first step, buf = momentum * buf + (1 - dampening) * d_p afterwards":
        lambda s: _sgd_loop(s, "damp_first"),
    "nesterov is ignored — with nesterov=True the step uses d_p + momentum * buf instead of buf":
        lambda s: _sgd_loop(s, "no_nesterov"),
    "the momentum buffer is not kept between steps — store it in self.state[p]['momentum_buffer']":
        lambda s: _sgd_loop(s, "no_state"),
    "maximize is ignored — with maximize=True negate the gradient first": lambda s: _sgd_loop(s, "no_maximize"),
    "maximize flips the final update, so weight decay pushes the wrong way — negate the gradient first, "
    "before weight decay": lambda s: _sgd_loop(s, "maximize_late"),
    "each group's own options are ignored — " + _GROUP_ADVICE: lambda s: _sgd_loop(s, "defaults"),
    "each group's own lr is ignored — " + _GROUP_ADVICE: lambda s: _sgd_loop(s, "lr_defaults"),
    "a parameter whose .grad is None was updated (as if its gradient were zero) — skip it: "
    "`if p.grad is None: continue`": lambda s: _sgd_loop(s, "none_as_zero"),
}


@exercise("05_optim", points=4, difficulty=3, minutes=40, hints=[
    "Subclass torch.optim.Optimizer: __init__ checks the arguments, puts them in a `defaults` dict and calls "
    "super().__init__(params, defaults); step() loops `for group in self.param_groups: for p in "
    "group['params']:` and reads every option from `group`.",
    "Decorate step with @torch.no_grad(). For each p with a gradient: d_p = p.grad (negated if maximize), "
    "then d_p = d_p + weight_decay * p, then the momentum buffer in self.state[p]['momentum_buffer'].",
    "Momentum: on the first step buf = d_p.clone(); later buf.mul_(momentum).add_(d_p, alpha=1 - dampening). "
    "Then d_p = d_p + momentum * buf if nesterov else buf, and p.add_(d_p, alpha=-lr).",
], forbidden=_FORBID_SGD)
def SGD(t, fn):
    shapes = [(4, 3), (5,), (2, 3, 2)]
    o = lambda **kw: [kw]
    cases = [
        ("plain SGD (lr=0.1), 3 parameters, 6 steps",
         _spec(t, [shapes], o(), dict(lr=0.1), 6), "the plain update is p <- p - lr * p.grad"),
        ("momentum=0.9, 10 steps",
         _spec(t, [shapes], o(), dict(lr=0.05, momentum=0.9), 10),
         "check the momentum buffer: buf = d_p.clone() first, then buf = momentum * buf + (1 - dampening) * d_p"),
        ("momentum=0.8, dampening=0.3",
         _spec(t, [shapes], o(), dict(lr=0.05, momentum=0.8, dampening=0.3), 8),
         "dampening scales the new gradient in the buffer update, from the second step on"),
        ("nesterov=True, momentum=0.9",
         _spec(t, [shapes], o(), dict(lr=0.05, momentum=0.9, nesterov=True), 8),
         "Nesterov's step is d_p + momentum * buf, with buf already updated"),
        ("weight_decay=0.1 with momentum=0.5",
         _spec(t, [shapes], o(), dict(lr=0.1, momentum=0.5, weight_decay=0.1), 8),
         "weight decay adds weight_decay * p to the gradient before the momentum buffer"),
        ("maximize=True with weight_decay=0.05",
         _spec(t, [shapes], o(), dict(lr=0.1, weight_decay=0.05, maximize=True, momentum=0.3), 8),
         "maximize negates the gradient before anything else"),
        ("2 param groups that differ only in lr (0.1 and 0.01), momentum=0.5",
         _spec(t, [[(4, 3), (5,)], [(2, 3, 2)]], [dict(), dict(lr=0.01)], dict(lr=0.1, momentum=0.5), 6),
         "each group has its own lr: read group['lr'] inside step()"),
        ("3 param groups with their own lr/momentum/nesterov/weight_decay; a parameter whose grad is None every "
         "third step, one that never gets a grad",
         _spec(t, [[(3, 2), (4,)], [(5,), (2, 2)], [(3,)]],
               [dict(lr=0.2), dict(momentum=0.9, nesterov=True, weight_decay=0.01),
                dict(lr=0.01, momentum=0.7, dampening=0.1, maximize=True)],
               dict(lr=0.05, momentum=0.5), 12, none_at={1, 3}, never={4}),
         "compare each group's options with the reference; parameters without a gradient must be skipped"),
        ("state_dict round trip: at step 6 a fresh SGD loads the state_dict and continues; torch.optim.SGD "
         "loads it too",
         _spec(t, [[(3, 2), (4,)], [(5,)]], [dict(), dict(lr=0.02, nesterov=True, momentum=0.9)],
               dict(lr=0.1, momentum=0.6, weight_decay=0.01), 12, reload_at=6),
         "all state must live in self.state[p]"),
    ]
    f = t.unseen(1, 2, 10)  # hidden round: other invalid values than the public ones
    invalid = [(f"lr={-0.1 * f:g}", dict(lr=-0.1 * f)), (f"momentum={-0.5 * f:g}", dict(lr=0.1, momentum=-0.5 * f)),
               (f"weight_decay={-0.01 * f:g}", dict(lr=0.1, weight_decay=-0.01 * f)),
               ("nesterov=True without momentum", dict(lr=0.1 * f, nesterov=True)),
               (f"nesterov=True with dampening={0.1 * f:g}",
                dict(lr=0.1, momentum=0.9, dampening=0.1 * f, nesterov=True))]
    valid = [("lr=0.0, momentum=0.0", dict(lr=0.0, momentum=0.0)),
             ("nesterov=True with momentum=0.9", dict(lr=0.1, momentum=0.9, nesterov=True))]
    _run_cases(t, fn, _TORCH_SGD, "sgd", cases, _SGD_MUTANTS, invalid, valid, dict(lr=0.1, momentum=0.9))


# --- Adagrad -----------------------------------------------------------------------------------------------

_ADAGRAD_DEFAULTS = dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10)


def _adagrad_loop(spec, mistake=""):
    opts = _flat_options(spec, _ADAGRAD_DEFAULTS, mistake)
    start = 0.0 if mistake == "zero_start" else {**_ADAGRAD_DEFAULTS, **spec["defaults"]}["initial_accumulator_value"]
    params = [p.clone() for g in spec["params"] for p in g]
    sums, steps, traj = [torch.full_like(p, start) for p in params], [0] * len(params), []
    for k, step_grads in enumerate(spec["grads"]):
        for i, g in enumerate(x for gs in step_grads for x in gs):
            if g is None:
                if mistake != "none_as_zero":
                    continue
                g = torch.zeros_like(params[i])
            o, p = opts[i], params[i]
            lr, decay, wd, eps = o["lr"], o["lr_decay"], o["weight_decay"], o["eps"]
            steps[i] += 1
            step = k + 1 if mistake == "global_step" else steps[i]
            d = g + wd * p if mistake not in ("no_wd", "decoupled") else g
            old = sums[i]
            sums[i] = sums[i] + {"wd_late": g * g, "abs": d.abs()}.get(mistake, d * d)
            clr = {"decay_step": lr / (1 + step * decay), "decay_mul": lr * (1 - decay) ** (step - 1),
                   "decay_linear": lr * (1 - (step - 1) * decay), "no_decay": lr}.get(mistake,
                                                                                    lr / (1 + (step - 1) * decay))
            std = (sums[i] + eps).sqrt() if mistake == "eps_inside" else \
                (old if mistake == "old_sum" else sums[i]).sqrt() + eps
            if mistake == "decoupled":
                p = p * (1 - lr * wd)
            params[i] = p - clr * d / std
        traj.append([p.clone() for p in params])
    return traj


_ADAGRAD_MUTANTS = {
    "lr_decay uses the step count itself — the first step has the full rate: clr = lr / (1 + (step - 1) * "
    "lr_decay), with step counted from 1": lambda s: _adagrad_loop(s, "decay_step"),
    "lr_decay divides the rate, it does not multiply it by (1 - lr_decay): clr = lr / (1 + (step - 1) * lr_decay)":
        lambda s: _adagrad_loop(s, "decay_mul"),
    "lr_decay divides the rate, it does not subtract from it: clr = lr / (1 + (step - 1) * lr_decay)":
        lambda s: _adagrad_loop(s, "decay_linear"),
    "lr_decay is ignored — the rate of step t is lr / (1 + (t - 1) * lr_decay)":
        lambda s: _adagrad_loop(s, "no_decay"),
    "eps is inside the square root — the denominator is sqrt(sum) + eps": lambda s: _adagrad_loop(s, "eps_inside"),
    "weight decay was added after accumulating — add weight_decay * p to the gradient first, then square that "
    "into sum and step with it": lambda s: _adagrad_loop(s, "wd_late"),
    "weight_decay is ignored — add weight_decay * p to the gradient before anything else":
        lambda s: _adagrad_loop(s, "no_wd"),
    "weight decay was applied to the weights directly (AdamW's way) — Adagrad adds weight_decay * p to the "
    "gradient": lambda s: _adagrad_loop(s, "decoupled"),
    "sum started at 0 — it starts at initial_accumulator_value: torch.full_like(p, initial_accumulator_value)":
        lambda s: _adagrad_loop(s, "zero_start"),
    "a parameter's step advanced at a step where its grad was None (or the count is shared by all parameters), "
    "so its lr_decay ran ahead — skip it (continue when p.grad is None) and keep the count per parameter in "
    "self.state[p]['step']": lambda s: _adagrad_loop(s, "global_step"),
    "each group's own options are ignored — " + _GROUP_ADVICE: lambda s: _adagrad_loop(s, "defaults"),
    "each group's own lr is ignored — " + _GROUP_ADVICE: lambda s: _adagrad_loop(s, "lr_defaults"),
    "each group's own eps is ignored — " + _GROUP_ADVICE: lambda s: _adagrad_loop(s, "eps_defaults"),
    "the step divides by the sum before this step's g * g was added — add g * g to sum first, then divide by "
    "sqrt(sum) + eps with the new sum": lambda s: _adagrad_loop(s, "old_sum"),
    "sum adds |g| — Adagrad accumulates squares: sum += g * g (sum.addcmul_(g, g))":
        lambda s: _adagrad_loop(s, "abs"),
    "a parameter whose .grad was None still advanced its step (as if its gradient were zero) — skip it "
    "(continue when p.grad is None)": lambda s: _adagrad_loop(s, "none_as_zero"),
}


def _adagrad_fresh_state(t, fn) -> None:
    """Cases: the state_dict right after the constructor already holds step 0 and sum = initial value."""
    shapes = [(4, 3), (5,), (2, 3)]
    init = 0.25 * t.unseen(1, 2, 9)
    kwargs = dict(lr=0.1, initial_accumulator_value=init)
    second = dict(initial_accumulator_value=init + 1.5)  # a per-group value: torch ignores it, the argument wins
    values = [t.randn(*s) for s in shapes]
    ref = _fresh_state(_TORCH_ADAGRAD, values, kwargs, second)["state"]
    for device in t.devices:
        with t.case(f"{device}: state_dict() right after Adagrad(..., initial_accumulator_value={init:g}) with a "
                    f"second param group that carries its own 'initial_accumulator_value': {init + 1.5:g} (torch "
                    "ignores it): every parameter already has state['step'] = 0 and state['sum'] filled with the "
                    "argument"):
            dtype = torch.float32 if device == "mps" else None
            got = t.call(fresh_state, fn, "adagrad", [v.to(device, dtype or v.dtype) for v in values], kwargs,
                         second)
            for i, (g, r) in enumerate(zip(got["state"], ref)):
                if not g:
                    raise Mismatch(f"the state_dict has no state for parameter {i} before the first step; "
                                   "torch.optim.Adagrad creates state['step'] and state['sum'] for every parameter "
                                   "in its constructor — do the same in __init__ after super().__init__(...): "
                                   "for each p of each group, self.state[p]['step'] = torch.tensor(0.0) and "
                                   "self.state[p]['sum'] = torch.full_like(p, initial_accumulator_value)")
                if sorted(g) != sorted(r):
                    raise Mismatch(f"self.state[p] of parameter {i} has keys {sorted(g)}; torch.optim.Adagrad "
                                   f"keeps {sorted(r)} — use the same keys, so that state_dicts are interchangeable")
                if _step_of(g) != 0:
                    raise Mismatch(f"state['step'] of parameter {i} is {g['step']!r} before any step — it should "
                                   "start at 0 and count the steps this parameter took")
                s = g["sum"]
                if isinstance(s, torch.Tensor) and s.shape == r["sum"].shape and s.device.type != "meta" \
                        and bool((s == 0).all()):
                    raise Mismatch(f"state['sum'] of parameter {i} starts at 0 — fill it with "
                                   "initial_accumulator_value: torch.full_like(p, initial_accumulator_value)")
                if i >= 2 and isinstance(s, torch.Tensor) and s.shape == r["sum"].shape \
                        and s.device.type != "meta" and bool((s == second["initial_accumulator_value"]).all()):
                    raise Mismatch(f"state['sum'] of parameter {i} starts at its param group's own "
                                   f"'initial_accumulator_value' ({second['initial_accumulator_value']:g}); "
                                   "torch.optim.Adagrad fills every sum from the constructor's argument "
                                   f"({init:g}) — initial_accumulator_value is not a per-group option: use the "
                                   "argument in __init__, not group['initial_accumulator_value']")
                expect_tensor(s, r["sum"].to(device, dtype or r["sum"].dtype), device=device,
                              what=f"state['sum'] of parameter {i}")


@exercise("05_optim", points=3, difficulty=2, minutes=30, hints=[
    "Same skeleton as SGD: validate (every argument must be >= 0), super().__init__(params, defaults), then "
    "create the state of every parameter right away: state['step'] = torch.tensor(0.0) and "
    "state['sum'] = torch.full_like(p, initial_accumulator_value).",
    "In step() (under @torch.no_grad()), for each p with a gradient: step += 1; g = p.grad + weight_decay * p; "
    "sum += g * g (in place: sum.addcmul_(g, g)).",
    "clr = lr / (1 + (step - 1) * lr_decay); p -= clr * g / (sqrt(sum) + eps), "
    "i.e. p.addcdiv_(g, sum.sqrt() + eps, value=-clr).",
], forbidden=_FORBID_ADAGRAD)
def Adagrad(t, fn):
    shapes = [(4, 3), (5,), (2, 3, 2)]
    o = lambda **kw: [kw]
    cases = [
        ("default hyper-parameters (lr=1e-2), 10 steps", _spec(t, [shapes], o(), {}, 10),
         "sum += g * g, then p -= lr * g / (sqrt(sum) + eps)"),
        ("lr=0.1, lr_decay=0.2, 10 steps", _spec(t, [shapes], o(), dict(lr=0.1, lr_decay=0.2), 10),
         "the rate of step t (counted from 1) is lr / (1 + (t - 1) * lr_decay)"),
        ("lr=0.05, weight_decay=0.3, 8 steps", _spec(t, [shapes], o(), dict(lr=0.05, weight_decay=0.3), 8),
         "weight decay adds weight_decay * p to the gradient before it is squared into sum"),
        ("eps=0.1 for the second of 2 param groups (1e-10 for the first), gradients of size 1e-2",
         _spec(t, [[(4, 3), (5,)], [(2, 3, 2)]], [dict(), dict(eps=0.1)], dict(lr=0.01), 8, scale=1e-2),
         "eps is added to sqrt(sum), outside the square root, and each group has its own eps: read group['eps'] "
         "inside step()"),
        ("initial_accumulator_value=0.5, lr=0.1, 8 steps",
         _spec(t, [shapes], o(), dict(lr=0.1, initial_accumulator_value=0.5), 8),
         "sum starts at initial_accumulator_value, not at 0"),
        ("2 param groups that differ only in lr (0.1 and 0.01)",
         _spec(t, [[(4, 3), (5,)], [(2, 3, 2)]], [dict(), dict(lr=0.01)], dict(lr=0.1), 6),
         "each group has its own lr: read group['lr'] inside step()"),
        ("3 param groups with their own lr/lr_decay/weight_decay/eps, initial_accumulator_value=0.1; a parameter "
         "whose grad is None every third step, one that never gets a grad",
         _spec(t, [[(3, 2), (4,)], [(5,), (2, 2)], [(3,), (2,)]],
               [dict(lr=0.2), dict(lr_decay=0.3, weight_decay=0.05), dict(lr=0.02, eps=1e-3)],
               dict(lr=0.05, initial_accumulator_value=0.1), 12, none_at={1, 3}, never={5}),
         "compare each group's options with the reference; parameters without a gradient must be skipped"),
        ("state_dict round trip: at step 6 a fresh Adagrad loads the state_dict and continues; "
         "torch.optim.Adagrad loads it too",
         _spec(t, [[(3, 2), (4,)], [(5,)]], [dict(), dict(lr=0.02, lr_decay=0.1)],
               dict(lr=0.1, weight_decay=0.01, initial_accumulator_value=0.2), 12, reload_at=6),
         "all state must live in self.state[p]"),
    ]
    f = t.unseen(1, 2, 10)  # hidden round: other invalid values than the public ones
    invalid = [(f"lr={-0.01 * f:g}", dict(lr=-0.01 * f)), (f"lr_decay={-0.1 * f:g}", dict(lr_decay=-0.1 * f)),
               (f"weight_decay={-0.01 * f:g}", dict(weight_decay=-0.01 * f)),
               (f"initial_accumulator_value={-0.1 * f:g}", dict(initial_accumulator_value=-0.1 * f)),
               (f"eps={-1e-10 * f:g}", dict(eps=-1e-10 * f))]
    valid = [("lr=0.0, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=0.0",
              dict(lr=0.0, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=0.0))]
    _run_cases(t, fn, _TORCH_ADAGRAD, "adagrad", cases, _ADAGRAD_MUTANTS, invalid, valid,
               dict(lr=0.1, initial_accumulator_value=0.1), first=_adagrad_fresh_state)


# --- AdamW -------------------------------------------------------------------------------------------------

_ADAMW_DEFAULTS = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False)


def _adamw_loop(spec, mistake=""):
    opts = _flat_options(spec, _ADAMW_DEFAULTS, mistake)
    params = [p.clone() for g in spec["params"] for p in g]
    n = len(params)
    m, v, vmax, steps, traj = [None] * n, [None] * n, [None] * n, [0] * n, []
    for k, step_grads in enumerate(spec["grads"]):
        for i, g in enumerate(x for gs in step_grads for x in gs):
            if g is None:
                continue
            o, p = opts[i], params[i]
            (b1, b2), lr, wd, eps = o["betas"], o["lr"], o["weight_decay"], o["eps"]
            if m[i] is None:
                m[i], v[i], vmax[i] = torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)
            steps[i] += 1
            step = k + 1 if mistake == "global_step" else steps[i]
            bias_step = {"bias_prev": max(step - 1, 1), "bias_next": step + 1}.get(mistake, step)
            if mistake == "coupled":
                g = g + wd * p
            elif mistake == "no_lr_wd":
                p = p * (1 - wd)
            elif mistake != "wd_late":
                p = p * (1 - lr * wd)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            bc1, bc2 = (1.0, 1.0) if mistake == "no_bias" else (1 - b1 ** bias_step, 1 - b2 ** bias_step)
            second = v[i]
            if o["amsgrad"]:
                vmax[i] = torch.maximum(vmax[i], v[i] / bc2 if mistake == "max_hat" else v[i])
                second = vmax[i] * bc2 if mistake == "max_hat" else vmax[i]
            if mistake == "eps_inside":
                denom = (second / bc2 + eps).sqrt()
            else:
                denom = second.sqrt() / math.sqrt(bc2) + eps
            new = p - lr / bc1 * m[i] / denom
            if mistake == "wd_late":
                new = new * (1 - lr * wd)
            params[i] = new
        traj.append([p.clone() for p in params])
    return traj


_ADAMW_MUTANTS = {
    "weight decay went into the gradient (Adam's L2 penalty) — AdamW decays the weights directly: "
    "p.mul_(1 - lr * weight_decay), apart from the moments": lambda s: _adamw_loop(s, "coupled"),
    "the weight decay is missing the learning rate — multiply p by (1 - lr * weight_decay)":
        lambda s: _adamw_loop(s, "no_lr_wd"),
    "weight decay is applied after the Adam update — decay p first (with its value before the step)":
        lambda s: _adamw_loop(s, "wd_late"),
    "no bias correction — divide by 1 - beta1**step and 1 - beta2**step": lambda s: _adamw_loop(s, "no_bias"),
    "the bias correction lags a step behind (step - 1, or 1 on the first step) — increment state['step'] first, "
    "then use that count: 1 - beta1**step and 1 - beta2**step, with step = 1 on a parameter's first update":
        lambda s: _adamw_loop(s, "bias_prev"),
    "the bias correction runs a step ahead (step + 1) — use the count after incrementing it once: 1 - beta1**step "
    "and 1 - beta2**step, with step = 1 on a parameter's first update": lambda s: _adamw_loop(s, "bias_next"),
    "eps is inside the square root — the denominator is sqrt(v_hat) + eps": lambda s: _adamw_loop(s, "eps_inside"),
    "the step count is shared by all parameters — keep it per parameter in self.state[p]['step'] (a parameter "
    "without a gradient does not advance it)": lambda s: _adamw_loop(s, "global_step"),
    "amsgrad keeps the maximum of the bias-corrected v — keep the maximum of the raw exp_avg_sq, then "
    "bias-correct it like v": lambda s: _adamw_loop(s, "max_hat"),
    "each group's own options are ignored — " + _GROUP_ADVICE: lambda s: _adamw_loop(s, "defaults"),
    "each group's own lr is ignored — " + _GROUP_ADVICE: lambda s: _adamw_loop(s, "lr_defaults"),
    "each group's own eps is ignored — " + _GROUP_ADVICE: lambda s: _adamw_loop(s, "eps_defaults"),
}


@exercise("05_optim", points=4, difficulty=3, minutes=40, hints=[
    "Same skeleton as SGD: validate, build `defaults`, super().__init__(params, defaults); step() under "
    "@torch.no_grad() loops over groups and parameters and skips p.grad is None.",
    "Per parameter keep state['step'], state['exp_avg'], state['exp_avg_sq'] (and state['max_exp_avg_sq'] "
    "with amsgrad), created with torch.zeros_like(p) on its first step. Decay first: p.mul_(1 - lr * wd).",
    "m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; denom = sqrt(v) / sqrt(1 - b2**step) + eps "
    "(with amsgrad use the running max of v instead); p -= lr / (1 - b1**step) * m / denom.",
], forbidden=_FORBID_ADAM)
def AdamW(t, fn):
    shapes = [(4, 3), (5,), (2, 3, 2)]
    o = lambda **kw: [kw]
    cases = [
        ("default hyper-parameters (lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2), 10 steps",
         _spec(t, [shapes], o(), {}, 10), "compare the moments and the bias correction with the formulas"),
        ("lr=0.05, betas=(0.8, 0.9), weight_decay=0.2, 10 steps",
         _spec(t, [shapes], o(), dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.2), 10),
         "check the decoupled weight decay: p <- p * (1 - lr * weight_decay) before the Adam step"),
        ("eps=0.1, gradients of size 1e-2",
         _spec(t, [shapes], o(), dict(lr=0.01, eps=0.1), 8, scale=1e-2),
         "eps is added to sqrt(v_hat) = sqrt(v) / sqrt(1 - beta2**step)"),
        ("amsgrad=True, lr=0.02, 12 steps",
         _spec(t, [shapes], o(), dict(lr=0.02, amsgrad=True, betas=(0.5, 0.6)), 12),
         "amsgrad keeps max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq) and uses it in place of exp_avg_sq"),
        ("3 param groups with their own lr/betas/eps/weight_decay/amsgrad; a parameter whose grad is None "
         "every third step, one that never gets a grad",
         _spec(t, [[(3, 2), (4,)], [(5,), (2, 2)], [(3,)]],
               [dict(lr=0.1), dict(betas=(0.7, 0.8), weight_decay=0.3, amsgrad=True),
                dict(lr=0.01, eps=1e-3, weight_decay=0.0)],
               dict(lr=0.03), 12, none_at={1, 3}, never={4}),
         "compare each group's options with the reference; parameters without a gradient must be skipped"),
        ("state_dict round trip: at step 6 a fresh AdamW loads the state_dict and continues; torch.optim.AdamW "
         "loads it too",
         _spec(t, [[(3, 2), (4,)], [(5,)]], [dict(), dict(lr=0.02, amsgrad=True)],
               dict(lr=0.05, weight_decay=0.1), 12, reload_at=6),
         "all state must live in self.state[p]"),
    ]
    f = t.unseen(1, 2, 10)  # hidden round: other invalid values than the public ones
    one = 1.0 + (f - 1) / 100  # 1.0 in the public round
    invalid = [(f"lr=-{f}e-3", dict(lr=-1e-3 * f)), (f"eps=-{f}e-8", dict(eps=-1e-8 * f)),
               (f"betas=({one}, 0.999)", dict(betas=(one, 0.999))), (f"betas=(0.9, {one})", dict(betas=(0.9, one))),
               (f"betas=({-0.1 * f:g}, 0.999)", dict(betas=(-0.1 * f, 0.999))),
               (f"weight_decay={-0.01 * f:g}", dict(weight_decay=-0.01 * f))]
    valid = [("betas=(0.0, 0.0), eps=0.0, weight_decay=0.0", dict(betas=(0.0, 0.0), eps=0.0, weight_decay=0.0))]
    _run_cases(t, fn, _TORCH_ADAMW, "adamw", cases, _ADAMW_MUTANTS, invalid, valid, dict(lr=0.1))


# --- clip_grad_norm_ ---------------------------------------------------------------------------------------

def clip_run(fn, values: list, grads: list, max_norm, norm_type, form: str) -> dict:
    """Driver: leaves with the given values and .grad (None: no gradient), passed to fn as a list, a generator
    or a single tensor; the returned norm and the gradients afterwards."""
    with untraced():
        leaves = [v.clone().requires_grad_(True) for v in values]
        for p, g in zip(leaves, grads):
            p.grad = None if g is None else g.clone()
    params = {"list": leaves, "generator": (p for p in leaves), "tensor": leaves[0] if leaves else None}[form]
    out = fn(params, max_norm) if norm_type is None else fn(params, max_norm, norm_type)
    with untraced():
        return {"norm": out.detach().clone() if isinstance(out, torch.Tensor) else _plain(out),
                "grads": [None if p.grad is None else p.grad.detach().clone() for p in leaves]}


def clip_norm_only(fn, values: list, grads: list, max_norm, norm_type, form: str):
    """Driver for the meta-device check: the returned norm and the clipped gradients."""
    run = clip_run(fn, values, grads, max_norm, norm_type, form)
    return [run["norm"]] + [g for g in run["grads"] if g is not None]


def _clip_reference(values, grads, max_norm, norm_type, form):
    leaves = [v.clone().requires_grad_(True) for v in values]
    for p, g in zip(leaves, grads):
        p.grad = None if g is None else g.clone()
    params = {"list": leaves, "generator": (p for p in leaves), "tensor": leaves[0] if leaves else None}[form]
    norm = _TORCH_CLIP(params, max_norm, 2.0 if norm_type is None else norm_type)
    return {"norm": norm, "grads": [None if p.grad is None else p.grad.clone() for p in leaves]}


def _clip_diagnosis(got, grads, max_norm, norm_type, tol) -> str | None:
    """The classic mistake whose norm and clipped gradients both match the learner's, if any."""
    same = lambda a, b: (a is None and b is None) or (isinstance(a, torch.Tensor) and b is not None and
                                                      a.shape == b.shape and a.dtype == b.dtype and
                                                      torch.allclose(a.cpu(), b, **tol))
    for why, m_norm, m_grads in _clip_mutants(grads, max_norm, norm_type):
        if same(got["norm"], m_norm) and all(same(a, b) for a, b in zip(got["grads"], m_grads)):
            return why
    return None


def _clip_mutants(grads, max_norm, norm_type):
    """(message, norm, grads) for the classic mistakes."""
    p = 2.0 if norm_type is None else float(norm_type)
    present = [g for g in grads if g is not None]
    if not present:
        return []
    norms = torch.stack([torch.linalg.vector_norm(g, p) for g in present])
    total = torch.linalg.vector_norm(norms, p)
    coef = lambda c: [None if g is None else g * c for g in grads]
    out = [
        ("clip_coef needs the + 1e-6: max_norm / (total_norm + 1e-6)", total,
         coef(torch.clamp(max_norm / total, max=1.0))),
        ("the gradients were scaled up to max_norm — only scale down: clamp the coefficient at 1", total,
         coef(max_norm / (total + 1e-6))),
        ("the gradients were not changed — multiply each p.grad in place by min(1, max_norm / (total + 1e-6))",
         total, grads),
        ("each gradient was clipped by its own norm — use one total norm over all gradients (the norm of the "
         "per-gradient norms)", total,
         [None if g is None else g * torch.clamp(max_norm / (torch.linalg.vector_norm(g, p) + 1e-6), max=1.0)
          for g in grads]),
    ]
    combine = "for norm_type=inf, their largest" if math.isinf(p) else f"(sum of norm**{p:g}) ** (1/{p:g})"
    out.append((f"the per-gradient norms were added up — combine them with the same {p:g}-norm: {combine}",
                norms.sum(), coef(torch.clamp(max_norm / (norms.sum() + 1e-6), max=1.0))))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    out.append(("that is the norm after clipping — return the total norm measured before scaling the gradients",
                total * scale, coef(scale)))
    return out


@exercise("05_optim", points=2, difficulty=2, minutes=20, hints=[
    "Collect the gradients first: grads = [p.grad for p in parameters if p.grad is not None] (turn a single "
    "tensor into [tensor]; a generator can be read only once).",
    "total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, norm_type) for g in grads]), "
    "norm_type) — this also works for norm_type=float('inf').",
    "coef = torch.clamp(max_norm / (total + 1e-6), max=1.0); then g.mul_(coef) for every g, under "
    "torch.no_grad(); return total.",
], forbidden=_FORBID_CLIP)
def clip_grad_norm_(t, fn):
    shapes = [(4, 3), (7,), (2, 3, 2)]
    values = lambda: [t.randn(*s) for s in shapes]
    cases = [
        ("3 parameters, 2-norm above max_norm=1.0", values(), [t.randn(*s) * 2 for s in shapes], 1.0, None, "list"),
        ("2-norm below max_norm=100.0 (nothing to clip)", values(), [t.randn(*s) for s in shapes], 100.0, 2.0,
         "list"),
        ("norm_type=inf, max_norm=0.5", values(), [t.randn(*s) * 3 for s in shapes], 0.5, float("inf"), "list"),
        ("norm_type=1.0, max_norm=2.0", values(), [t.randn(*s) for s in shapes], 2.0, 1.0, "list"),
        ("norm_type=3.0, max_norm=0.25", values(), [t.randn(*s) for s in shapes], 0.25, 3.0, "list"),
        ("parameters given as a generator (like model.parameters())", values(),
         [t.randn(*s) * 2 for s in shapes], 1.0, 2.0, "generator"),
        ("parameters given as a single tensor", [t.randn(5, 2)], [t.randn(5, 2) * 4], 1.5, 2.0, "tensor"),
        ("a parameter whose grad is None is skipped", values(), [t.randn(4, 3) * 3, None, t.randn(2, 3, 2)],
         1.0, 2.0, "list"),
        ("float32 gradients of size 1e4, max_norm=1 (an integer)", [t.randn(*s, dtype=torch.float32) for s in shapes],
         [t.randn(*s, dtype=torch.float32) * 1e4 for s in shapes], 1, 2.0, "list"),
    ]
    for label, vals, grads, max_norm, norm_type, form in cases:
        ref = _clip_reference(vals, grads, max_norm, norm_type, form)
        tol = dict(atol=1e-4, rtol=1e-5) if vals[0].dtype == torch.float32 else dict(atol=1e-10, rtol=1e-9)
        for device in t.devices:
            with t.case(f"{device}: {label}"):
                move = lambda x: None if x is None else x.to(device)
                try:
                    got = t.call(clip_run, fn, [move(v) for v in vals], [move(g) for g in grads], max_norm,
                                 norm_type, form)
                except LearnerError as e:
                    if form != "tensor":
                        raise
                    raise Mismatch(f"{e}\n→ parameters may be a single Tensor — wrap it: if isinstance(parameters, "
                                   "torch.Tensor): parameters = [parameters]") from None
                unchanged = all(g is not None and g.dtype == e.dtype and torch.equal(g.cpu(), e)
                                for g, e in zip(got["grads"], grads))
                if form == "tensor" and unchanged:
                    raise Mismatch("the gradient was not clipped when parameters came as a single tensor: "
                                   "parameters may be a single Tensor — wrap it: if isinstance(parameters, "
                                   "torch.Tensor): parameters = [parameters] (iterating a tensor walks its rows, "
                                   "which have no .grad)")
                if form == "generator" and unchanged:
                    raise Mismatch("the gradients were not clipped when parameters came as a generator — a "
                                   "generator can be read only once: start with parameters = list(parameters)")
                try:
                    expect_tensor(got["norm"], ref["norm"], device=device, what="the returned total norm", **tol)
                    for i, (g, r) in enumerate(zip(got["grads"], ref["grads"])):
                        if r is None:
                            if g is not None:
                                raise Mismatch(f"parameter {i} had no gradient and should still have none")
                            continue
                        expect_tensor(g, r, device=device, what=f"the gradient of parameter {i} after clipping",
                                      **tol)
                except Mismatch as e:
                    why = _clip_diagnosis(got, grads, max_norm, norm_type, tol)
                    if why is None and "wrong values" in e.message:
                        why = ("the total norm is the norm_type-norm of the per-gradient norm_type-norms, "
                               "measured before clipping" if e.message.startswith("the returned total norm") else
                               "every gradient should be multiplied by the same factor, "
                               "min(1, max_norm / (total_norm + 1e-6))")
                    if why:
                        raise Mismatch(f"{e.message}\n→ {why}", e.detail) from None
                    raise
    with t.case("no parameter has a gradient: returns a 0-dim tensor 0.0 and changes nothing"):
        got = t.call(clip_run, fn, [t.randn(3)], [None], 1.0, 2.0, "list")
        norm = got["norm"]
        if not isinstance(norm, torch.Tensor) or norm.ndim != 0 or float(norm) != 0.0:
            raise Mismatch(f"expected a 0-dim tensor 0.0, got {norm!r} — return torch.tensor(0.0) when there is "
                           "no gradient at all")
    if "cuda" not in t.devices:
        label, vals, grads, max_norm, norm_type, form = cases[0]
        t.device_check(label, clip_norm_only, (fn, vals, grads, max_norm, norm_type, form))


# --- warmup_cosine_lr --------------------------------------------------------------------------------------

def _schedule(step, total_steps, base_lr, warmup_steps, min_lr=0.0, mistake=""):
    """The curriculum's formula as a plain function (mistake: one classic slip, for diagnoses)."""
    if mistake == "warm_le" and 0 < warmup_steps and step <= warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if mistake == "warm_le_cap" and 0 < warmup_steps and step <= warmup_steps:
        return base_lr * min(step + 1, warmup_steps) / warmup_steps
    if mistake != "min_first" and step < warmup_steps:
        return base_lr * (step if mistake == "warm_from_zero" else step + 1) / warmup_steps
    if step >= total_steps and mistake != "no_clamp":
        return float(min_lr)
    if mistake == "min_first" and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = total_steps if mistake == "no_shift" else max(1, total_steps - warmup_steps)
    progress = (step - (0 if mistake == "no_shift" else warmup_steps)) / span
    if mistake == "no_half":
        return float(min_lr + (base_lr - min_lr) * math.cos(math.pi * progress))
    if mistake == "no_min":
        return float(base_lr * 0.5 * (1 + math.cos(math.pi * progress)))
    return float(min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))


_WARM_LT = "the warm-up rule applies only while step < warmup_steps, not <= — from step == warmup_steps on, " \
           "the cosine takes over (and once step >= total_steps, min_lr)"
_LR_MUTANTS = {
    "warm_from_zero": "the warm-up starts at 0 — it is base_lr * (step + 1) / warmup_steps, so step 0 already "
                      "has a small positive rate",
    "warm_le": _WARM_LT,
    "warm_le_cap": _WARM_LT,
    "no_clamp": "past the end the cosine comes back up — for step >= total_steps return min_lr",
    "min_first": "the warm-up rule wins: check step < warmup_steps before step >= total_steps",
    "no_shift": "the cosine starts at the end of the warm-up: progress = (step - warmup_steps) / "
                "max(1, total_steps - warmup_steps)",
    "no_half": "the cosine factor is 0.5 * (1 + cos(pi * progress)), which goes from 1 to 0",
    "no_min": "the cosine goes from base_lr down to min_lr: min_lr + (base_lr - min_lr) * factor",
}


@exercise("05_optim", points=1, difficulty=1, minutes=10, hints=[
    "Three cases, in this order: step < warmup_steps (linear warm-up), step >= total_steps (min_lr), "
    "otherwise the cosine.",
    "Warm-up: base_lr * (step + 1) / warmup_steps. Cosine: progress = (step - warmup_steps) / "
    "max(1, total_steps - warmup_steps), in [0, 1).",
    "lr = min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress)); return float(lr).",
])
def warmup_cosine_lr(t, fn):
    total, warm = t.unseen(20 + t.integer(0, 30), 60, 500), t.unseen(3 + t.integer(0, 5), 8, 40)
    base, low = 0.1 + float(t.rand(())), 1e-3 * (1 + t.integer(0, 9))
    steps = sorted({0, 1, warm - 1, warm, warm + 1, (warm + total) // 2, total - 1, total, total + 7,
                    t.integer(warm + 1, total)})
    cases = [(s, total, base, warm, low) for s in steps]
    n, m = t.unseen(10, 11, 100), t.unseen(5, 6, 50)  # the edge cases' run lengths
    cases += [(0, n, 0.5, 0, 0.0), (n // 2 - 1, n, 0.5, 0, 0.0),      # no warm-up at all
              (2, m, 1.0, m + 3, 0.1), (m + 1, m, 1.0, m + 3, 0.1),  # warm-up longer than the run: warm-up wins
              (m, m, 1.0, m, 0.1), (3, n + 2, 2.0, 4, 0.0)]
    for step, total_steps, base_lr, warmup_steps, min_lr in cases:
        args = (step, total_steps, base_lr, warmup_steps, min_lr)
        with t.case(f"warmup_cosine_lr(step={step}, total_steps={total_steps}, base_lr={base_lr:.4g}, "
                    f"warmup_steps={warmup_steps}, min_lr={min_lr:g})"):
            _expect_lr(t.call(fn, *args), args, "the learning rate")
    with t.case("min_lr given as the integer 0 past the end: the result is still a float"):
        _expect_lr(t.call(fn, n + 2, n, 0.3, 2, 0), (n + 2, n, 0.3, 2, 0), f"warmup_cosine_lr({n + 2}, {n}, 0.3, 2, 0)")
    with t.case("min_lr defaults to 0.0"):
        _expect_lr(t.call(fn, n, n, 0.3, 2), (n, n, 0.3, 2, 0.0), f"warmup_cosine_lr({n}, {n}, 0.3, 2)")


def _expect_lr(got, args: tuple, what: str) -> None:
    """The schedule's value for args, with the classic slip it matches (or the rule that applies) when wrong."""
    expected = _schedule(*args)
    min_lr = args[4]
    if type(got) is int and type(min_lr) is int and got == min_lr == expected:
        raise Mismatch(f"{what} returned the int {got}, not a float: min_lr came in as the int {min_lr} — return "
                       "float(min_lr) (the signature promises a float)")
    try:
        expect_value(got, expected, what=what)
    except Mismatch as e:
        if not isinstance(got, float):
            raise
        for mistake, why in _LR_MUTANTS.items():
            try:
                wrong = _schedule(*args, mistake=mistake)
            except ZeroDivisionError:
                continue
            if not math.isclose(wrong, expected) and math.isclose(got, wrong, rel_tol=1e-9):
                raise Mismatch(f"{e.message}\n→ {why}", e.detail) from None
        step, total_steps, _, warmup_steps, _ = args
        rule = ("the warm-up rule applies: base_lr * (step + 1) / warmup_steps" if step < warmup_steps else
                "step >= total_steps: the result is min_lr" if step >= total_steps else
                "the cosine rule applies: min_lr + (base_lr - min_lr) * 0.5 * (1 + cos(pi * progress))")
        raise Mismatch(f"{e.message}\n→ here {rule}", e.detail) from None


# --- accumulated_step --------------------------------------------------------------------------------------

def _model(spec: dict) -> nn.Module:
    d_in, hidden, d_out = spec["sizes"]
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Dropout(0.0), nn.Linear(hidden, d_out)).double()
    with torch.no_grad():
        for p, w in zip(model.parameters(), spec["weights"]):
            p.copy_(w)
    model.train(spec["train"])
    return model.to(spec["weights"][0].device)


def _loss_fn(spec: dict):
    return nn.CrossEntropyLoss() if spec["loss"] == "cross_entropy" else nn.MSELoss()


def _sgd(model: nn.Module, spec: dict):
    return _TORCH_SGD(model.parameters(), lr=spec["lr"], momentum=spec["momentum"],
                      weight_decay=spec["weight_decay"])


def accumulate_run(fn, spec: dict) -> dict:
    """Driver: a small model with stale gradients, torch.optim.SGD and micro-batches; after fn: the returned loss,
    the parameters and every module's training flag."""
    with untraced():
        model = _model(spec)
        optimizer = _sgd(model, spec)
        for p, stale in zip(model.parameters(), spec["stale"]):
            p.grad = stale.clone()
        batches = [(x.clone(), y.clone()) for x, y in spec["batches"]]
    loss = fn(model, _loss_fn(spec), batches, optimizer)
    with untraced():
        return {"loss": loss.detach().clone() if isinstance(loss, torch.Tensor) else _plain(loss),
                "params": [p.detach().clone() for p in model.parameters()],
                "modes": [m.training for m in model.modules()]}


def _accumulate_reference(spec: dict, mistake: str = "") -> tuple[float, list]:
    """One SGD step on the concatenated batch (or a classic mistake); the mean loss and the parameters."""
    model, k = _model(spec), len(spec["batches"])
    optimizer = _sgd(model, spec)
    loss_fn = _loss_fn(spec)
    if mistake == "stale":
        for p, stale in zip(model.parameters(), spec["stale"]):
            p.grad = stale.clone()
    if mistake in ("per_batch", "per_batch_mean"):
        for x, y in spec["batches"]:
            optimizer.zero_grad()
            (loss_fn(model(x), y) / (k if mistake == "per_batch_mean" else 1)).backward()
            optimizer.step()
        return 0.0, [p.detach().clone() for p in model.parameters()]
    x = torch.cat([x for x, _ in spec["batches"]])
    y = torch.cat([y for _, y in spec["batches"]])
    loss = loss_fn(model(x), y)
    (loss * (k if mistake == "sum" else 1)).backward()
    optimizer.step()
    return loss.item(), [p.detach().clone() for p in model.parameters()]


_ACCUMULATE_MUTANTS = {
    "sum": "the update is k times too large — divide each micro-batch loss by the number of micro-batches "
           "before backward()",
    "stale": "gradients that were already in .grad leaked into the update — call optimizer.zero_grad() first",
    "per_batch": "the parameters moved once per micro-batch — call optimizer.step() once, after the loop",
    "per_batch_mean": "the parameters moved once per micro-batch — call optimizer.step() once, after the loop",
}


@exercise("05_optim", points=2, difficulty=2, minutes=20, hints=[
    "Start with optimizer.zero_grad(). Then for each (x, y): loss = loss_fn(model(x), y); "
    "(loss / len(micro_batches)).backward() — backward() adds into .grad.",
    "Call optimizer.step() once, after the loop. Keep a running total of loss.item() to return its mean.",
    "Do not call model.train() or model.eval(): the caller chose the mode (or save model.training and "
    "restore it with model.train(was_training)). Return a Python float.",
])
def accumulated_step(t, fn):
    def spec(k, b, sizes, loss, train, lr=0.1, momentum=0.0, weight_decay=0.0):
        d_in, hidden, d_out = sizes
        shapes = [(hidden, d_in), (hidden,), (d_out, hidden), (d_out,)]
        xs = [t.randn(b, d_in) for _ in range(k)]
        ys = [t.randint(0, d_out, (b,)) if loss == "cross_entropy" else t.randn(b, d_out) for _ in range(k)]
        return {"sizes": sizes, "weights": [t.randn(*s) * 0.5 for s in shapes],
                "stale": [t.randn(*s) for s in shapes], "batches": list(zip(xs, ys)), "loss": loss,
                "train": train, "lr": lr, "momentum": momentum, "weight_decay": weight_decay}

    cases = [
        ("4 micro-batches of 3, MSE loss, model in train mode, stale gradients in .grad",
         spec(4, 3, (5, 7, 2), "mse", True)),
        ("3 micro-batches of 2, cross-entropy loss, model in eval mode",
         spec(3, 2, (4, 6, 3), "cross_entropy", False)),
        ("a single micro-batch of 5, model in eval mode", spec(1, 5, (3, 4, 1), "mse", False)),
        ("5 micro-batches of 1, SGD with momentum=0.9 and weight_decay=0.01, model in train mode",
         spec(5, 1, (2, 3, 2), "mse", True, lr=0.2, momentum=0.9, weight_decay=0.01)),
    ]
    for label, s in cases:
        loss, params = _accumulate_reference(s)
        for device in t.devices:
            if device == "mps":
                continue  # float64 models
            with t.case(f"{device}: {label}"):
                got = t.call(accumulate_run, fn, _spec_to(s, device))
                modes = [m.training for m in _model(s).modules()]
                if got["modes"] != modes:
                    now = "train" if any(got["modes"]) else "eval"
                    raise Mismatch(f"the model was in {'train' if s['train'] else 'eval'} mode and is now in "
                                   f"{now} mode — leave the mode as the caller set it (don't call model.train() "
                                   "or model.eval(), or restore model.train(was_training) at the end)")
                for i, (g, r) in enumerate(zip(got["params"], params)):
                    if _close(g, r, (1e-10, 1e-8)):
                        continue
                    for mistake, why in _ACCUMULATE_MUTANTS.items():
                        if _matches([got["params"]], [_accumulate_reference(s, mistake)[1]], (1e-10, 1e-8)):
                            raise Mismatch(f"the parameters after the step differ from one step on the "
                                           f"concatenated batch\n→ {why}")
                    try:
                        expect_tensor(g, r, device=device, atol=1e-10, rtol=1e-8, what=f"parameter {i} after "
                                      "the step (expected: one step on the concatenated batch)")
                    except Mismatch as e:
                        if "wrong values" not in e.message:
                            raise
                        raise Mismatch(f"{e.message}\n→ zero the gradients, backward() each micro-batch's loss "
                                       "divided by the number of micro-batches, then call optimizer.step() once",
                                       e.detail) from None
                try:
                    expect_value(got["loss"], loss, what="the returned loss")
                except Mismatch as e:
                    with torch.no_grad():
                        micro = [_loss_fn(s)(_model(s)(x), y).item() for x, y in s["batches"]]
                    if isinstance(got["loss"], float) and len(micro) > 1 and math.isclose(got["loss"], sum(micro)):
                        raise Mismatch(f"{e.message}\n→ that is the sum of the micro-batch losses; return their "
                                       "mean", e.detail) from None
                    if isinstance(got["loss"], float) and len(micro) > 1 and math.isclose(got["loss"], micro[-1]):
                        raise Mismatch(f"{e.message}\n→ that is the last micro-batch's loss; return the mean over "
                                       "all micro-batches", e.detail) from None
                    if not isinstance(got["loss"], float):
                        raise
                    raise Mismatch(f"{e.message}\n→ return the mean of the micro-batch losses (each loss.item(), "
                                   "before dividing it for backward)", e.detail) from None


def _spec_to(spec: dict, device: str) -> dict:
    move = lambda x: x.to(device)
    return {**spec, "weights": [move(w) for w in spec["weights"]], "stale": [move(s) for s in spec["stale"]],
            "batches": [(move(x), move(y)) for x, y in spec["batches"]]}
