"""05_optim: each check accepts an independent correct answer and rejects the usual mistakes by name."""
import math

import pytest
import torch
from torch.optim.adagrad import adagrad as aliased_functional_adagrad  # aliases made before any check runs
from torch.optim.sgd import sgd as aliased_functional_sgd

from grader import evaluate
from verdicts import assert_passes, assert_rejects


def assert_not_attempted(stub, name):
    report = evaluate(stub, name=name)
    assert report.status == "not_attempted" and report.points == 0, report.text()


# --- SGD ---------------------------------------------------------------------------------------------------

class SGDOther(torch.optim.Optimizer):
    """Written apart from the lesson: one knob (`mistake`) per wrong variant below."""
    mistake = ""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                 maximize=False):
        for what, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if value < 0:
                raise ValueError(f"{what} must be >= 0, got {value}")
        if nesterov and not (momentum > 0 and dampening == 0) and self.mistake != "no_nesterov_check":
            raise ValueError("Nesterov: momentum > 0 and dampening == 0 required")
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize})
        self.own = {}

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        with torch.no_grad() if self.mistake != "no_no_grad" else torch.enable_grad():
            for group in self.param_groups:
                opt = self.defaults if self.mistake == "defaults" else group
                for p in group["params"]:
                    if p.grad is None and self.mistake != "no_skip":
                        if self.mistake != "none_as_zero":
                            continue
                        grad = torch.zeros_like(p)
                    elif self.mistake == "grad_in_place":
                        grad = p.grad
                    else:
                        grad = p.grad.clone()
                    if opt["maximize"] and self.mistake != "no_maximize":
                        grad = grad.neg()
                    if self.mistake != "wd_late":
                        grad += opt["weight_decay"] * p
                    mu = opt["momentum"]
                    if mu:
                        if self.mistake == "own_dict":
                            st, key = self.own.setdefault(id(p), {}), "momentum_buffer"
                        else:
                            st, key = self.state[p], "momentum" if self.mistake == "key" else "momentum_buffer"
                        if key not in st:
                            if self.mistake == "damp_first":
                                st[key] = (1 - opt["dampening"]) * grad
                            elif self.mistake == "cpu_buffer":
                                st[key] = torch.zeros(p.shape, dtype=p.dtype)
                                st[key].add_(grad)
                            else:
                                st[key] = grad.clone()
                        else:
                            st[key] = mu * st[key] + (1 - opt["dampening"]) * grad
                        grad = grad + mu * st[key] if opt["nesterov"] and self.mistake != "no_nesterov" \
                            else st[key]
                    if self.mistake == "wd_late":
                        grad = grad + opt["weight_decay"] * p
                    p -= (self.defaults["lr"] if self.mistake == "lr_defaults" else opt["lr"]) * grad
        return None if self.mistake == "no_return" else loss


def _sgd_variant(mistake):
    return type("SGD", (SGDOther,), {"mistake": mistake})


class SGDSubclassesTorch(torch.optim.SGD):
    pass


class SGDCallsTorch(SGDOther):
    def step(self, closure=None):
        for group in self.param_groups:
            torch.optim.SGD(group["params"], lr=group["lr"]).step()


class SGDCallsAliasedFunctional(SGDOther):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            aliased_functional_sgd(ps, [p.grad for p in ps], [None] * len(ps), weight_decay=group["weight_decay"],
                                   momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"],
                                   nesterov=group["nesterov"], maximize=group["maximize"])


class SGDStub(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
        # YOUR CODE HERE
        raise NotImplementedError()

    def step(self, closure=None):
        # YOUR CODE HERE
        raise NotImplementedError()


def test_sgd_independent_implementation_passes():
    assert_passes(SGDOther, "SGD")


@pytest.mark.parametrize("mistake, fragments", [
    ("wd_late", ("weight decay is added after the momentum buffer",)),
    ("damp_first", ("first momentum buffer must be a plain copy",)),
    ("defaults", ("group's own options are ignored",)),
    ("lr_defaults", ("own lr is ignored", "read each option from its param group inside step()")),
    ("no_nesterov", ("nesterov is ignored",)),
    ("no_maximize", ("maximize is ignored",)),
    ("none_as_zero", ("had grad=None but moved", "continue when p.grad is None")),
    ("no_skip", ("'NoneType' object has no attribute", "a parameter has grad None — skip it",
                 "if p.grad is None: continue")),
    ("no_no_grad", ("leaf",)),
    ("own_dict", ("self.state[p]", "is empty")),
    ("key", ("has keys ['momentum']",)),
    ("grad_in_place", ("step() changed p.grad",)),
    ("no_return", ("should return the closure's loss",)),
    ("no_nesterov_check", ("nesterov=True without momentum", "should raise ValueError")),
    ("cpu_buffer", ("device check", "cpu tensor")),
])
def test_sgd_wrong_implementations_are_rejected(mistake, fragments):
    assert_rejects(_sgd_variant(mistake), "SGD", *fragments)


@pytest.mark.parametrize("wrong, fragments", [
    (SGDSubclassesTorch, ("called `torch.optim.SGD`, which", "your class inherits from it")),
    (SGDCallsTorch, ("called `torch.optim.SGD`", "forbids")),
    (SGDCallsAliasedFunctional, ("called `torch.optim.sgd.sgd`", "forbids")),
])
def test_sgd_forbidden_shortcuts_are_rejected(wrong, fragments):
    assert_rejects(wrong, "SGD", *fragments)


def test_sgd_stub_is_not_attempted():
    assert_not_attempted(SGDStub, "SGD")


def test_torch_sgd_still_works_after_the_check():
    evaluate(SGDCallsTorch, name="SGD")
    p = torch.ones(2, requires_grad=True)
    p.grad = torch.ones(2)
    torch.optim.SGD([p], lr=0.5).step()
    assert torch.equal(p.detach(), torch.full((2,), 0.5))


# --- AdamW -------------------------------------------------------------------------------------------------

class AdamWOther(torch.optim.Optimizer):
    """Bias-corrected m_hat / v_hat form, step kept as a float tensor like torch's; `mistake` knobs below."""
    mistake = ""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        b1, b2 = betas
        bad_betas = not (0 <= b1 < 1) or (not (0 <= b2 < 1) and self.mistake != "no_beta_check")
        if lr < 0 or eps < 0 or weight_decay < 0 or bad_betas:
            raise ValueError("invalid AdamW hyper-parameter")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))
        self.calls = 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            if self.mistake == "closure_no_grad":
                loss = closure()
            else:
                with torch.enable_grad():
                    loss = closure()
        self.calls += 1
        names = ("m", "v", "vmax") if self.mistake == "keys" else ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            for p in filter(lambda q: q.grad is not None, group["params"]):
                st = self.state[p]
                if len(st) == 0:
                    st["step"] = torch.tensor(0.0)
                    for key in names:
                        st[key] = torch.zeros(p.shape) if self.mistake == "float32_state" else \
                            torch.zeros(p.shape, dtype=p.dtype) if self.mistake == "cpu_state" else \
                            torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                t = self.calls if self.mistake == "global_step" else st["step"].item()
                if self.mistake == "bias_prev":
                    t = t - 1 or 1  # the count before this step, and 1 on the first
                g = p.grad + wd * p if self.mistake == "coupled" else p.grad
                if self.mistake != "coupled":
                    p *= 1 - lr * wd
                m, v, vmax = (st[k] for k in names)
                m.copy_(b1 * m + (1 - b1) * g)
                v.copy_(b2 * v + (1 - b2) * g.square())
                c1, c2 = (1.0, 1.0) if self.mistake == "no_bias" else (1 - b1 ** t, 1 - b2 ** t)
                if group["amsgrad"]:
                    if self.mistake == "max_hat":
                        vmax.copy_(torch.maximum(vmax, v / c2))
                        v_hat = vmax.clone()
                    else:
                        vmax.copy_(torch.maximum(vmax, v))
                        v_hat = vmax / c2
                else:
                    v_hat = v / c2
                denom = (v_hat + eps).sqrt() if self.mistake == "eps_inside" else v_hat.sqrt() + eps
                p -= lr * (m / c1) / denom
        return loss


def _adamw_variant(mistake):
    return type("AdamW", (AdamWOther,), {"mistake": mistake})


class AdamWSubclassesTorch(torch.optim.AdamW):
    pass


class AdamWCallsTorchAdam(AdamWOther):
    def step(self, closure=None):
        torch.optim.Adam(self.param_groups[0]["params"]).step()


class AdamWStub(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        # YOUR CODE HERE
        raise NotImplementedError()


def test_adamw_independent_implementation_passes():
    assert_passes(AdamWOther, "AdamW")


@pytest.mark.parametrize("mistake, fragments", [
    ("coupled", ("weight decay went into the gradient",)),
    ("no_bias", ("no bias correction",)),
    ("bias_prev", ("lr=0.05, betas=(0.8, 0.9)", "bias correction lags a step behind")),
    ("eps_inside", ("eps is inside the square root",)),
    ("global_step", ("step count is shared",)),
    ("max_hat", ("amsgrad keeps the maximum of the bias-corrected",)),
    ("float32_state", ("torch.float32", "zeros_like")),
    ("keys", ("self.state[p]", "has keys", "exp_avg")),
    ("closure_no_grad", ("step(closure)", "does not require grad")),
    ("no_beta_check", ("betas=(0.9, 1.0) raises ValueError", "should raise ValueError")),
    ("cpu_state", ("device check", "cpu tensor")),
])
def test_adamw_wrong_implementations_are_rejected(mistake, fragments):
    assert_rejects(_adamw_variant(mistake), "AdamW", *fragments)


@pytest.mark.parametrize("wrong, fragments", [
    (AdamWSubclassesTorch, ("called `torch.optim.AdamW`, which", "your class inherits from it")),
    (AdamWCallsTorchAdam, ("called `torch.optim.Adam`", "forbids")),
])
def test_adamw_forbidden_shortcuts_are_rejected(wrong, fragments):
    assert_rejects(wrong, "AdamW", *fragments)


def test_adamw_bias_correction_off_by_one_is_named_in_every_case():
    report = evaluate(_adamw_variant("bias_prev"), name="AdamW")
    failed = [c for c in report.cases if not c.passed and not c.skipped]
    assert failed and all("bias correction lags a step behind" in c.message for c in failed), report.text()


def test_adamw_stub_is_not_attempted():
    assert_not_attempted(AdamWStub, "AdamW")


# --- Adagrad -----------------------------------------------------------------------------------------------

class AdagradOther(torch.optim.Optimizer):
    """Written apart from the lesson (step kept as a Python int, the update out of place); `mistake` knobs."""
    mistake = ""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        checked = {"lr": lr, "weight_decay": weight_decay, "initial_accumulator_value": initial_accumulator_value,
                   "eps": eps}
        if self.mistake != "no_decay_check":
            checked["lr_decay"] = lr_decay
        for what, value in checked.items():
            if value < 0 or (self.mistake == "lr_zero_rejected" and what == "lr" and value == 0):
                raise ValueError(f"invalid {what}: {value}")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps))
        self.start = initial_accumulator_value
        if self.mistake not in ("lazy", "lazy_zero"):
            for group in self.param_groups:
                for p in group["params"]:
                    self._new_state(p, group)

    def _new_state(self, p, group=None):
        st = self.state[p]
        st["step"] = 0
        start = group.get("initial_accumulator_value", self.start) if self.mistake == "iav_from_group" \
            else self.start
        if self.mistake == "cpu_sum":
            st["sum"] = torch.full(tuple(p.shape), float(start), dtype=p.dtype)
        else:
            st["sum"] = torch.zeros_like(p) if self.mistake == "lazy_zero" else torch.full_like(p, start)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = self.defaults["lr"] if self.mistake == "lr_defaults" else group["lr"]
            decay, wd, eps = group["lr_decay"], group["weight_decay"], group["eps"]
            if self.mistake == "eps_defaults":
                eps = self.defaults["eps"]
            for p in group["params"]:
                if p.grad is None and self.mistake == "none_step":
                    self.state[p]["step"] = int(self.state[p]["step"]) + 1
                if p.grad is None and self.mistake != "none_as_zero":
                    continue
                if not self.state[p]:
                    self._new_state(p)
                st = self.state[p]
                st["step"] = int(st["step"]) + 1
                grad = torch.zeros_like(p) if p.grad is None else p.grad
                g = grad + wd * p
                old = st["sum"].clone()
                if self.mistake == "abs_sum":
                    st["sum"].add_(g.abs())
                else:
                    st["sum"].add_((grad if self.mistake == "wd_late" else g) ** 2)
                k = st["step"]
                rate = {"decay_mul": lr * (1 - decay) ** (k - 1), "decay_step": lr / (1 + k * decay)}.get(
                    self.mistake, lr / (1 + (k - 1) * decay))
                total = old if self.mistake == "old_sum" else st["sum"]
                std = (total + eps).sqrt() if self.mistake == "eps_inside" else total.sqrt() + eps
                p.copy_(p - rate * g / std)
        return loss


def _adagrad_variant(mistake):
    return type("Adagrad", (AdagradOther,), {"mistake": mistake})


class AdagradSubclassesTorch(torch.optim.Adagrad):
    pass


class AdagradCallsTorch(AdagradOther):
    def step(self, closure=None):
        for group in self.param_groups:
            torch.optim.Adagrad(group["params"], lr=group["lr"]).step()


class AdagradCallsAliasedFunctional(AdagradOther):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            steps = []
            for p in ps:
                self.state[p]["step"] = torch.tensor(float(self.state[p]["step"]))
                steps.append(self.state[p]["step"])
            aliased_functional_adagrad(ps, [p.grad for p in ps], [self.state[p]["sum"] for p in ps], steps,
                                       lr=group["lr"], weight_decay=group["weight_decay"],
                                       lr_decay=group["lr_decay"], eps=group["eps"])


class AdagradStub(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        # YOUR CODE HERE
        raise NotImplementedError()


def test_adagrad_independent_implementation_passes():
    assert_passes(AdagradOther, "Adagrad")


@pytest.mark.parametrize("mistake, fragments", [
    ("decay_mul", ("lr_decay divides the rate", "not multiply")),
    ("decay_step", ("the first step has the full rate",)),
    ("eps_inside", ("eps is inside the square root",)),
    ("wd_late", ("weight decay was added after accumulating",)),
    ("lazy", ("no state for parameter 0 before the first step", "in __init__")),
    ("lazy_zero", ("sum started at 0", "initial_accumulator_value")),
    ("lr_defaults", ("own lr is ignored", "read each option from its param group inside step()")),
    ("no_decay_check", ("lr_decay=-0.1 raises ValueError", "should raise ValueError")),
    ("cpu_sum", ("device check", "cpu tensor")),
    ("iav_from_group", ("its param group's own 'initial_accumulator_value'", "not a per-group option")),
    ("eps_defaults", ("eps=0.1 for the second of 2 param groups", "own options are ignored",
                      "read each option from its param group inside step()")),
    ("eps_defaults", ("3 param groups", "own eps is ignored", "read each option from its param group")),
    ("old_sum", ("default hyper-parameters", "divides by the sum before this step's g * g was added")),
    ("old_sum", ("lr_decay=0.2", "divides by the sum before this step's g * g was added")),
    ("abs_sum", ("lr=0.05, weight_decay=0.3", "sum adds |g|", "sum += g * g")),
    ("none_as_zero", ("had grad=None but moved", "continue when p.grad is None")),
    ("none_step", ("step advanced at a step where its grad was None", "continue when p.grad is None")),
    ("lr_zero_rejected", ("is valid (no error)", "0 is a valid lr", "reject only negative values")),
])
def test_adagrad_wrong_implementations_are_rejected(mistake, fragments):
    assert_rejects(_adagrad_variant(mistake), "Adagrad", *fragments)


@pytest.mark.parametrize("wrong, fragments", [
    (AdagradSubclassesTorch, ("called `torch.optim.Adagrad`, which", "your class inherits from it")),
    (AdagradCallsTorch, ("called `torch.optim.Adagrad`", "forbids")),
    (AdagradCallsAliasedFunctional, ("called `torch.optim.adagrad.adagrad`", "forbids")),
])
def test_adagrad_forbidden_shortcuts_are_rejected(wrong, fragments):
    assert_rejects(wrong, "Adagrad", *fragments)


def test_adagrad_stub_is_not_attempted():
    assert_not_attempted(AdagradStub, "Adagrad")


def test_torch_adagrad_still_works_after_the_check():
    evaluate(AdagradCallsAliasedFunctional, name="Adagrad")
    p = torch.ones(2, requires_grad=True)
    p.grad = torch.full((2,), 2.0)
    torch.optim.Adagrad([p], lr=0.5).step()
    assert torch.allclose(p.detach(), torch.full((2,), 0.5))


# --- clip_grad_norm_ ---------------------------------------------------------------------------------------

def clip_other(parameters, max_norm, norm_type=2.0, *, mistake=""):
    params = [parameters] if torch.is_tensor(parameters) and mistake != "no_wrap" else parameters
    if mistake != "generator_twice":
        params = list(params)
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return torch.tensor(0.0)
    if mistake == "cpu_norms":
        per = torch.zeros(len(with_grad), dtype=with_grad[0].grad.dtype)
        for i, p in enumerate(with_grad):
            per[i] = p.grad.norm(norm_type)
    else:
        per = torch.stack([p.grad.abs().max() if math.isinf(norm_type) else p.grad.norm(norm_type)
                           for p in with_grad])
    total = per.sum() if mistake == "sum_norms" else per.abs().max() if math.isinf(norm_type) else \
        per.pow(norm_type).sum().pow(1.0 / norm_type)
    for p in (q for q in params if q.grad is not None):
        if mistake == "per_param":
            p.grad.mul_(min(1.0, max_norm / (p.grad.norm(norm_type).item() + 1e-6)))
            continue
        coef = max_norm / (total + (0.0 if mistake == "no_eps" else 1e-6))
        p.grad.mul_(coef if mistake == "no_clamp" else coef.clamp(max=1.0))
    if mistake == "norm_after":
        return torch.stack([p.grad.norm(norm_type) for p in with_grad]).norm(norm_type)
    return total.item() if mistake == "float" else total


def _clip_variant(mistake):
    def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
        return clip_other(parameters, max_norm, norm_type, mistake=mistake)
    return clip_grad_norm_


def clip_calls_torch(parameters, max_norm, norm_type=2.0):
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type)


def clip_stub(parameters, max_norm, norm_type=2.0):
    raise NotImplementedError()


def test_clip_independent_implementation_passes():
    assert_passes(clip_other, "clip_grad_norm_")


@pytest.mark.parametrize("mistake, fragments", [
    ("no_eps", ("+ 1e-6",)),
    ("no_clamp", ("only scale down",)),
    ("sum_norms", ("per-gradient norms were added up",)),
    ("per_param", ("clipped by its own norm",)),
    ("generator_twice", ("generator",)),
    ("float", ("should be a torch.Tensor",)),
    ("norm_after", ("the returned total norm", "wrong values")),
    ("cpu_norms", ("device check", "on cpu")),
    ("no_wrap", ("single tensor", "parameters may be a single Tensor — wrap it",
                 "if isinstance(parameters, torch.Tensor): parameters = [parameters]")),
])
def test_clip_wrong_implementations_are_rejected(mistake, fragments):
    assert_rejects(_clip_variant(mistake), "clip_grad_norm_", *fragments)


def test_clip_forbidden_and_stub():
    assert_rejects(clip_calls_torch, "clip_grad_norm_", "called `torch.nn.utils.clip_grad_norm_`")
    assert_not_attempted(clip_stub, "clip_grad_norm_")


# --- warmup_cosine_lr --------------------------------------------------------------------------------------

def lr_other(step, total_steps, base_lr, warmup_steps, min_lr=0.0, *, mistake=""):
    if mistake == "warm_le" and step == warmup_steps > 0:  # step <= warmup_steps in the warm-up test
        return base_lr
    if step < warmup_steps:
        return base_lr * ((step if mistake == "from_zero" else step + 1) / warmup_steps)
    if step >= total_steps and mistake != "no_clamp":
        return min_lr + 0.0 if mistake != "int" else min_lr
    frac = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    factor = math.cos(math.pi * frac) if mistake == "no_half" else (math.cos(math.pi * frac) + 1) / 2
    if mistake == "tensor":
        factor = (torch.cos(torch.tensor(math.pi * frac, dtype=torch.float64)) + 1) / 2
    return min_lr + factor * (base_lr - min_lr)


def _lr_variant(mistake):
    def warmup_cosine_lr(step, total_steps, base_lr, warmup_steps, min_lr=0.0):
        return lr_other(step, total_steps, base_lr, warmup_steps, min_lr, mistake=mistake)
    return warmup_cosine_lr


def lr_min_first(step, total_steps, base_lr, warmup_steps, min_lr=0.0):
    if step >= total_steps:
        return float(min_lr)
    return lr_other(step, total_steps, base_lr, warmup_steps, min_lr)


def lr_stub(step, total_steps, base_lr, warmup_steps, min_lr=0.0):
    raise NotImplementedError()


def test_lr_independent_implementation_passes():
    assert_passes(lr_other, "warmup_cosine_lr")


@pytest.mark.parametrize("wrong, fragments", [
    (_lr_variant("from_zero"), ("warm-up starts at 0",)),
    (_lr_variant("no_clamp"), ("comes back up",)),
    (_lr_variant("no_half"), ("0.5 * (1 + cos(pi * progress))",)),
    (_lr_variant("int"), ("returned the int 0", "min_lr came in as the int 0 — return float(min_lr)")),
    (_lr_variant("warm_le"), ("warmup_steps=", "only while step < warmup_steps, not <=")),
    (_lr_variant("tensor"), ("got a tensor",)),
    (lr_min_first, ("warm-up rule wins",)),
])
def test_lr_wrong_implementations_are_rejected(wrong, fragments):
    assert_rejects(wrong, "warmup_cosine_lr", *fragments)


def test_lr_stub_is_not_attempted():
    assert_not_attempted(lr_stub, "warmup_cosine_lr")


# --- accumulated_step --------------------------------------------------------------------------------------

def accumulate_other(model, loss_fn, micro_batches, optimizer, *, mistake=""):
    if mistake != "no_zero":
        for p in model.parameters():
            p.grad = None
    if mistake == "train":
        model.train()
    losses = []
    for x, y in micro_batches:
        loss = loss_fn(model(x), y)
        losses.append(loss.detach())
        (loss if mistake == "no_divide" else loss * (1.0 / len(micro_batches))).backward()
        if mistake == "step_each":
            optimizer.step()
            optimizer.zero_grad()
    if mistake != "step_each":
        optimizer.step()
    mean = torch.stack(losses).sum() if mistake == "sum" else torch.stack(losses).mean()
    return mean if mistake == "tensor" else mean.item()


def _accumulate_variant(mistake):
    def accumulated_step(model, loss_fn, micro_batches, optimizer):
        return accumulate_other(model, loss_fn, micro_batches, optimizer, mistake=mistake)
    return accumulated_step


def accumulate_stub(model, loss_fn, micro_batches, optimizer):
    raise NotImplementedError()


def test_accumulate_independent_implementation_passes():
    assert_passes(accumulate_other, "accumulated_step")


@pytest.mark.parametrize("mistake, fragments", [
    ("no_divide", ("k times too large",)),
    ("no_zero", ("leaked", "zero_grad")),
    ("step_each", ("once per micro-batch",)),
    ("train", ("eval mode and is now in train mode",)),
    ("sum", ("sum of the micro-batch losses",)),
    ("tensor", ("got a tensor",)),
])
def test_accumulate_wrong_implementations_are_rejected(mistake, fragments):
    assert_rejects(_accumulate_variant(mistake), "accumulated_step", *fragments)


def test_accumulate_stub_is_not_attempted():
    assert_not_attempted(accumulate_stub, "accumulated_step")
