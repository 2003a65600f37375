"""12_performance: independent correct implementations pass; the usual mistakes are rejected with a diagnosis."""
import os
import statistics
import time
import timeit
from time import perf_counter

import numpy as np
import pytest
import torch
import torch.distributed as dist

from grader import evaluate
from verdicts import assert_passes, assert_rejects


def stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("name", ["benchmark", "all_reduce_mean", "autocast_train_step"])
def test_stub_is_not_attempted(name):
    report = evaluate(stub, name=name)
    assert report.status == "not_attempted" and report.points == 0, report.text()


@pytest.mark.parametrize("name, right", [("benchmark", "bench_from_import"), ("all_reduce_mean", "mean_gather"),
                                         ("autocast_train_step", "step_amp")])
def test_correct_answers_pass_the_hidden_round(name, right, monkeypatch):
    monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", "918273645")
    report = evaluate(globals()[right], name=name)
    assert report.passed and any(c.hidden for c in report.cases), report.text()


# --- benchmark --------------------------------------------------------------------------------------------------
def _on_cuda(args) -> bool:
    return any(isinstance(a, torch.Tensor) and a.device.type == "cuda" for a in args)


def bench_loop(fn, *args, warmup=3, iters=10):
    if iters < 1:
        raise ValueError("iters must be at least 1")
    cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(*args)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_from_import(fn, *args, warmup=3, iters=10):
    """`from time import perf_counter`, one sync per iteration (the previous stop's sync starts the next),
    the median by sorting."""
    if iters < 1:
        raise ValueError(f"iters={iters}")
    sync = torch.cuda.synchronize if _on_cuda(args) else (lambda: None)
    for _ in range(warmup):
        fn(*args)
    sync()
    stamps = [perf_counter()]
    for _ in range(iters):
        fn(*args)
        sync()
        stamps.append(perf_counter())
    times = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    mid = len(times) // 2
    return times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2


def bench_timeit(fn, *args, warmup=3, iters=10):
    """timeit.default_timer, numpy's median (a numpy float64 is a float), CUDA asked about first."""
    if iters < 1:
        raise ValueError("iters < 1")
    cuda = torch.cuda.is_available() and _on_cuda(args)
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
        t0 = timeit.default_timer()
        fn(*args)
        if cuda:
            torch.cuda.synchronize()
        times.append(timeit.default_timer() - t0)
    return np.median(times)


def bench_times_warmup(fn, *args, warmup=3, iters=10):
    if iters < 1:
        raise ValueError("iters")
    times = []
    for _ in range(warmup + iters):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_mean(fn, *args, warmup=3, iters=10):
    if iters < 1:
        raise ValueError("iters")
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def bench_total(fn, *args, warmup=3, iters=10):
    if iters < 1:
        raise ValueError("iters")
    for _ in range(warmup):
        fn(*args)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(*args)
    return time.perf_counter() - t0


def bench_ms(fn, *args, warmup=3, iters=10):
    return bench_loop(fn, *args, warmup=warmup, iters=iters) * 1000


def bench_sync_always(fn, *args, warmup=3, iters=10):
    if iters < 1:
        raise ValueError("iters")
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(*args)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_sync_never(fn, *args, warmup=3, iters=10):
    if iters < 1:
        raise ValueError("iters")
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_sync_after_only(fn, *args, warmup=3, iters=10):
    """Synchronises before stopping the clock, never before starting it (the warm-up leaks into the first)."""
    if iters < 1:
        raise ValueError("iters")
    cuda = _on_cuda(args)
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(*args)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_extra_call(fn, *args, warmup=3, iters=10):
    if iters < 1:
        raise ValueError("iters")
    fn(*args)  # "one more to be safe"
    return bench_loop(fn, *args, warmup=warmup, iters=iters)


def bench_no_value_error(fn, *args, warmup=3, iters=10):
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) if times else 0.0


def bench_torch_median(fn, *args, warmup=3, iters=10):
    if iters < 1:
        raise ValueError("iters")
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return torch.tensor(times, dtype=torch.float64).median().item()


def bench_wall_clock(fn, *args, warmup=3, iters=10):
    if iters < 1:
        raise ValueError("iters")
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        t0 = time.time()
        fn(*args)
        times.append(time.time() - t0)
    return statistics.median(times)


def bench_tuple_args(fn, *args, warmup=3, iters=10):
    if iters < 1:
        raise ValueError("iters")
    for _ in range(warmup + iters):
        fn(args)
    return 0.0


def bench_sync_if_available(fn, *args, warmup=3, iters=10):
    """Synchronises whenever CUDA is available, CPU arguments or not."""
    if iters < 1:
        raise ValueError("iters")
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(*args)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_first_arg_only(fn, *args, warmup=3, iters=10):
    """Looks only at args[0] to decide whether to synchronise."""
    if iters < 1:
        raise ValueError("iters")
    cuda = bool(args) and isinstance(args[0], torch.Tensor) and args[0].is_cuda
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(*args)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _per_call_times(fn, args, warmup, iters) -> list:
    if iters < 1:
        raise ValueError("iters")
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return times


def bench_min(fn, *args, warmup=3, iters=10):
    return min(_per_call_times(fn, args, warmup, iters))


def bench_max(fn, *args, warmup=3, iters=10):
    return max(_per_call_times(fn, args, warmup, iters))


def bench_timeit_repeat(fn, *args, warmup=3, iters=10):
    """timeit.repeat's own timer and loop instead of reading perf_counter around each call."""
    if iters < 1:
        raise ValueError("iters")
    for _ in range(warmup):
        fn(*args)
    return statistics.median(timeit.repeat(lambda: fn(*args), number=1, repeat=iters))


@pytest.mark.parametrize("right", [bench_loop, bench_from_import, bench_timeit])
def test_benchmark_accepts(right):
    assert_passes(right, "benchmark")


@pytest.mark.parametrize("wrong, fragments", [
    (bench_times_warmup, ("median over the warm-up calls too",)),
    (bench_mean, ("the mean of the per-call times", "statistics.median")),
    (bench_total, ("total time",)),
    (bench_ms, ("milliseconds",)),
    (bench_sync_always, ("synchronize() was called although no argument is a cuda tensor",)),
    (bench_sync_if_available, ("synchronise only when an argument is a cuda tensor", "is_available")),
    (bench_first_arg_only, ("argument 2 of fn (not the first) is a cuda tensor", "every positional argument")),
    (bench_min, ("shortest of the timed calls (min)", "statistics.median")),
    (bench_max, ("longest of the timed calls (max)", "statistics.median")),
    (bench_timeit_repeat, ("timed with timeit", "call time.perf_counter() yourself")),
    (bench_sync_never, ("torch.cuda.synchronize() was never called",)),
    (bench_sync_after_only, ("started without torch.cuda.synchronize()",)),
    (bench_extra_call, ("should be warmup + iters",)),
    (bench_no_value_error, ("should raise ValueError",)),
    (bench_torch_median, ("lower of the two middle times",)),
    (bench_wall_clock, ("perf_counter() was never read",)),
    (bench_tuple_args, ("fn(*args)",)),
])
def test_benchmark_rejects(wrong, fragments):
    assert_rejects(wrong, "benchmark", *fragments)


def test_benchmark_leaves_the_clock_and_synchronize_as_they_were():
    clock, sync, available = time.perf_counter, torch.cuda.synchronize, torch.cuda.is_available
    evaluate(bench_loop, name="benchmark")
    evaluate(bench_from_import, name="benchmark")
    assert time.perf_counter is clock and torch.cuda.synchronize is sync and torch.cuda.is_available is available
    assert perf_counter is clock and timeit.default_timer is clock


# --- all_reduce_mean --------------------------------------------------------------------------------------------
def mean_sum(tensor):
    y = tensor.clone() if tensor.is_floating_point() else tensor.float()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / dist.get_world_size()


def mean_gather(tensor):
    """all_gather every rank's tensor, then the mean over a new leading dim; int inputs in the default dtype."""
    x = tensor if tensor.is_floating_point() else tensor.to(torch.get_default_dtype())
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.stack(parts).mean(0)


def mean_divide_first(tensor):
    """Each rank divides its own copy first, then the sum of the shares is the mean."""
    dtype = tensor.dtype if torch.is_floating_point(tensor) else torch.get_default_dtype()
    share = tensor.to(dtype) / dist.get_world_size()
    dist.all_reduce(share, op=dist.ReduceOp.SUM)
    return share


def mean_reduce_broadcast(tensor):
    """dist.reduce to rank 0, divide there, broadcast back."""
    out = tensor.clone().to(tensor.dtype if tensor.is_floating_point() else torch.get_default_dtype())
    dist.reduce(out, dst=0)
    if dist.get_rank() == 0:
        out /= dist.get_world_size()
    dist.broadcast(out, src=0)
    return out


def mean_double_for_int(tensor):
    y = tensor.clone() if tensor.is_floating_point() else tensor.double()
    dist.all_reduce(y)
    return y / dist.get_world_size()


def mean_by_rank(tensor):
    y = tensor.clone() if tensor.is_floating_point() else tensor.float()
    dist.all_reduce(y)
    return y / (dist.get_rank() + 1)


def mean_sys_exit(tensor):
    import sys
    if dist.get_rank() == 1:
        sys.exit(0)
    return mean_sum(tensor)


def mean_os_exit(tensor):
    if dist.get_rank() == dist.get_world_size() - 1:
        os._exit(3)
    return mean_sum(tensor)


def mean_in_place(tensor):
    dist.all_reduce(tensor)
    return tensor / dist.get_world_size()


def mean_returns_input(tensor):
    y = tensor.float() if not tensor.is_floating_point() else tensor
    dist.all_reduce(y)
    y /= dist.get_world_size()
    return y


def mean_no_divide(tensor):
    y = tensor.clone().double() if not tensor.is_floating_point() else tensor.clone()
    dist.all_reduce(y)
    return y


def mean_two(tensor):
    y = tensor.clone() if tensor.is_floating_point() else tensor.float()
    dist.all_reduce(y)
    return y / 2


def mean_floor(tensor):
    y = tensor.clone()
    dist.all_reduce(y)
    return y // dist.get_world_size()


def mean_avg(tensor):
    """ReduceOp.AVG, which this torch's gloo has."""
    y = tensor.clone() if tensor.is_floating_point() else tensor.to(torch.float32)
    dist.all_reduce(y, op=dist.ReduceOp.AVG)
    return y


def mean_avg_int(tensor):
    y = tensor.clone()
    dist.all_reduce(y, op=dist.ReduceOp.AVG)
    return y


def mean_local(tensor):
    return tensor.clone() if tensor.is_floating_point() else tensor.float()


def mean_destroys(tensor):
    y = mean_sum(tensor)
    dist.destroy_process_group()
    return y


def mean_rank0_only(tensor):
    y = tensor.clone() if tensor.is_floating_point() else tensor.float()
    if dist.get_rank() == 0:
        dist.all_reduce(y)
    return y / dist.get_world_size()


def mean_hangs(tensor):
    if dist.get_rank() == 1:
        while True:
            time.sleep(0.05)
    return mean_sum(tensor)


def mean_raises_on_one_rank(tensor):
    if dist.get_rank() == dist.get_world_size() - 1:
        raise RuntimeError("boom")
    return mean_sum(tensor)


@pytest.mark.parametrize("right", [mean_sum, mean_gather, mean_avg, mean_divide_first, mean_reduce_broadcast])
def test_all_reduce_mean_accepts(right):
    assert_passes(right, "all_reduce_mean")


@pytest.mark.parametrize("wrong, fragments", [
    (mean_in_place, ("changed in place", "reduce a copy")),
    (mean_returns_input, ("changed in place",)),
    (mean_no_divide, ("the sum over the ranks", "get_world_size")),
    (mean_two, ("divided by 2", "not a hard-coded")),
    (mean_floor, ("floating",)),
    (mean_avg_int, ("integer tensor cannot hold a mean",)),
    (mean_local, ("nothing was reduced",)),
    (mean_destroys, ("destroyed the process group",)),
    (mean_double_for_int, ("should be torch.get_default_dtype() (torch.float32)", "not .double()")),
    (mean_by_rank, ("divided the sum by different numbers", "rank 0 by 1, rank 1 by 2", "dist.get_rank() + 1",
                    "divide by dist.get_world_size()")),
    (mean_sys_exit, ("rank 1 exited with exit code 0 before all_reduce_mean returned", "sys.exit()")),
])
def test_all_reduce_mean_rejects(wrong, fragments):
    assert_rejects(wrong, "all_reduce_mean", *fragments)


def _ours() -> set[int]:
    """Processes of this session running this program that descend from this one: the ranks a check forked,
    also when orphaned (reparented to init). Another pytest-xdist worker's processes, same program and session,
    descend from that worker and are not counted."""
    me = os.getpid()
    mine = open(f"/proc/{me}/stat").read().rsplit(")", 1)[1].split()
    program = open(f"/proc/{me}/cmdline", "rb").read()
    parent = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                same = f.read() == program
        except OSError:
            continue
        if stat[3] == mine[3] and same and int(pid) != me:  # the same session and program
            parent[int(pid)] = int(stat[1])

    def descends(pid: int) -> bool:
        seen = set()
        while pid in parent and pid not in seen:
            seen.add(pid)
            pid = parent[pid]
        return pid in (me, 1)

    return {pid for pid in parent if descends(pid)}


@pytest.mark.parametrize("wrong, fragments", [
    (mean_rank0_only, ("the same number of times",)),
    (mean_raises_on_one_rank, ("raised RuntimeError", "boom")),
    (mean_hangs, ("did not finish",)),
    (mean_os_exit, ("exited with exit code 3 before all_reduce_mean returned",)),
])
def test_all_reduce_mean_cleans_up_after_a_hang(wrong, fragments, monkeypatch):
    from grader.checks import lesson12_performance as checks
    monkeypatch.setattr(checks, "WORLD_TIMEOUT_S", 3.0)
    monkeypatch.setattr(checks, "COLLECTIVE_TIMEOUT_S", 1.0)
    before = _ours()
    start = time.monotonic()
    assert_rejects(wrong, "all_reduce_mean", *fragments)
    assert time.monotonic() - start < 2 * 3.0 + 5  # two worlds, each stopped at its deadline
    time.sleep(0.2)
    assert _ours() <= before  # every rank and its leader killed and reaped


# --- autocast_train_step ---------------------------------------------------------------------------------------
def _dtype_for(device) -> torch.dtype:
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def step_plain(model, batch, loss_fn, optimizer, device, scaler=None):
    x, y = batch
    x, y = x.to(device), y.to(device)
    optimizer.zero_grad()
    with torch.autocast(device_type=device.type, dtype=_dtype_for(device)):
        loss = loss_fn(model(x), y)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.item()


def step_amp(model, batch, loss_fn, optimizer, device, scaler=None):
    """torch.amp.autocast with a string device, model.zero_grad(set_to_none=False), an unscale_ before the step
    (as for clipping), the loss read out before backward."""
    kind = torch.device(device).type
    x, y = (t.to(device, non_blocking=True) for t in batch)
    model.zero_grad(set_to_none=False)
    with torch.amp.autocast(kind, dtype=torch.bfloat16 if kind == "cpu" else torch.float16):
        logits = model(x)
        loss = loss_fn(logits, y)
    value = float(loss.detach())
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return value


def step_float16_on_cpu(model, batch, loss_fn, optimizer, device, scaler=None):
    x, y = (t.to(device) for t in batch)
    optimizer.zero_grad()
    with torch.autocast(device_type=device.type, dtype=torch.float16):
        loss = loss_fn(model(x), y)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.item()


def step_no_zero_grad(model, batch, loss_fn, optimizer, device, scaler=None):
    x, y = (t.to(device) for t in batch)
    with torch.autocast(device_type=device.type, dtype=_dtype_for(device)):
        loss = loss_fn(model(x), y)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.item()


def step_ignores_scaler(model, batch, loss_fn, optimizer, device, scaler=None):
    x, y = (t.to(device) for t in batch)
    optimizer.zero_grad()
    with torch.autocast(device_type=device.type, dtype=_dtype_for(device)):
        loss = loss_fn(model(x), y)
    loss.backward()
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return loss.item()


def step_scaled_loss(model, batch, loss_fn, optimizer, device, scaler=None):
    x, y = (t.to(device) for t in batch)
    optimizer.zero_grad()
    with torch.autocast(device_type=device.type, dtype=_dtype_for(device)):
        loss = loss_fn(model(x), y)
    if scaler is not None:
        loss = scaler.scale(loss)
    loss.backward()
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return loss.item()


def step_forces_train(model, batch, loss_fn, optimizer, device, scaler=None):
    model.train()
    return step_plain(model, batch, loss_fn, optimizer, device, scaler)


def step_y_not_moved(model, batch, loss_fn, optimizer, device, scaler=None):
    x, y = batch
    x = x.to(device)
    optimizer.zero_grad()
    with torch.autocast(device_type=device.type, dtype=_dtype_for(device)):
        loss = loss_fn(model(x), y)
    loss.backward()
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return loss.item()


def step_hard_coded_cpu(model, batch, loss_fn, optimizer, device, scaler=None):
    x, y = batch[0].to("cpu"), batch[1].to("cpu")
    return step_plain(model, (x, y), loss_fn, optimizer, device, scaler)


def step_hard_coded_cuda(model, batch, loss_fn, optimizer, device, scaler=None):
    x, y = batch[0].to("cuda"), batch[1].to("cuda")
    return step_plain(model, (x, y), loss_fn, optimizer, device, scaler)


def step_no_autocast(model, batch, loss_fn, optimizer, device, scaler=None):
    x, y = (t.to(device) for t in batch)
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step() if scaler is None else (scaler.step(optimizer), scaler.update())
    return loss.item()


def step_backward_inside(model, batch, loss_fn, optimizer, device, scaler=None):
    x, y = (t.to(device) for t in batch)
    optimizer.zero_grad()
    with torch.autocast(device_type=device.type, dtype=_dtype_for(device)):
        loss = loss_fn(model(x), y)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    return loss.item()


def step_twice(model, batch, loss_fn, optimizer, device, scaler=None):
    x, y = (t.to(device) for t in batch)
    optimizer.zero_grad()
    with torch.autocast(device_type=device.type, dtype=_dtype_for(device)):
        loss = loss_fn(model(x), y)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    optimizer.step()
    return loss.item()


def step_returns_tensor(model, batch, loss_fn, optimizer, device, scaler=None):
    x, y = (t.to(device) for t in batch)
    optimizer.zero_grad()
    with torch.autocast(device_type=device.type, dtype=_dtype_for(device)):
        loss = loss_fn(model(x), y)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach()


def step_str_device(model, batch, loss_fn, optimizer, device, scaler=None):
    """str(device) ("cpu:0", "cuda:0") as autocast's device_type: torch 2.14 accepts an indexed device type."""
    x, y = (t.to(device) for t in batch)
    optimizer.zero_grad()
    with torch.autocast(str(device), dtype=_dtype_for(device)):
        loss = loss_fn(model(x), y)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.item()


def step_scaler_plain_step(model, batch, loss_fn, optimizer, device, scaler=None):
    """Scales the loss but steps the optimizer itself, then scaler.update()."""
    x, y = (t.to(device) for t in batch)
    optimizer.zero_grad()
    with torch.autocast(device_type=device.type, dtype=_dtype_for(device)):
        loss = loss_fn(model(x), y)
    (loss if scaler is None else scaler.scale(loss)).backward()
    optimizer.step()
    if scaler is not None:
        scaler.update()
    return loss.item()


def step_zero_grad_late(model, batch, loss_fn, optimizer, device, scaler=None):
    """zero_grad between backward and the step."""
    x, y = (t.to(device) for t in batch)
    with torch.autocast(device_type=device.type, dtype=_dtype_for(device)):
        loss = loss_fn(model(x), y)
    (loss if scaler is None else scaler.scale(loss)).backward()
    optimizer.zero_grad()
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return loss.item()


def step_moves_model(model, batch, loss_fn, optimizer, device, scaler=None):
    model.to("cpu")
    return step_plain(model, batch, loss_fn, optimizer, device, scaler)


@pytest.mark.parametrize("right", [step_plain, step_amp, step_str_device])
def test_autocast_train_step_accepts(right):
    assert_passes(right, "autocast_train_step")


@pytest.mark.parametrize("wrong, fragments", [
    (step_float16_on_cpu, ("float16", "bfloat16 on the cpu")),
    (step_no_zero_grad, ("zero_grad",)),
    (step_ignores_scaler, ("loss was not scaled", "scaler.scale(loss).backward()")),
    (step_scaled_loss, ("scaled loss",)),
    (step_forces_train, ("eval mode", "leave the mode")),
    (step_y_not_moved, ("labels y were not moved",)),
    (step_hard_coded_cpu, ("written into the code",)),
    (step_hard_coded_cuda, ("cuda",)),
    (step_no_autocast, ("did not run under autocast",)),
    (step_backward_inside, ("backward ran inside the autocast block",)),
    (step_twice, ("stepped 2 times",)),
    (step_returns_tensor, ("should be a python float", "loss.item()")),
    (step_moves_model, ("written into the code",)),
    (step_scaler_plain_step, ("optimizer did not step through scaler.step(optimizer)",
                              "No inf checks were recorded prior to update")),
    (step_zero_grad_late, ("scaler.step(optimizer) found no gradients", "zero_grad first")),
])
def test_autocast_train_step_rejects(wrong, fragments):
    assert_rejects(wrong, "autocast_train_step", *fragments)


def test_a_scaler_assertion_is_diagnosed_before_it_is_quoted():
    report = evaluate(step_scaler_plain_step, name="autocast_train_step")
    case = next(c for c in report.cases if "GradScaler" in c.name)
    first, second = case.message.splitlines()[:2]
    assert "scaler.step(optimizer)" in first and " — " in first, case.message
    assert second.startswith("raised AssertionError") and "No inf checks" in second, case.message


def test_the_cuda_run_hands_over_an_indexed_device():
    """Only a CUDA run can show what autocast makes of str(device) == "cuda:0", and a hard-coded "cuda" is told
    from `device` by its missing index: the CUDA run must hand over torch.device("cuda", 0)."""
    from grader.checks import lesson12_performance as checks
    from grader.compare import Mismatch
    assert checks._handed_device("cuda") == torch.device("cuda", 0)
    assert checks._handed_device("cpu") == torch.device("cpu", 0)
    with pytest.raises(Mismatch, match="'cuda', a device written into the code"):
        checks._expect_step({"targets": ["cuda:0", "cuda"]}, {}, None, None, None, None, "cuda", True, "")
