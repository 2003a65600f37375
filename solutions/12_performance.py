# %% [markdown]
# # 12 · Performance: measure, speed up, scale out
#
# A model that trains is only half the job; the other half is making it train fast enough, fit in memory, and
# use more than one process or machine when one is not enough. This last lesson is about the tools PyTorch
# already has for that, and about the habit that comes before any of them: **measure first**. Guessing where
# the time goes is wrong more often than not.
#
# The plan:
#
# 1. timing correctly: warm-up, CUDA's asynchronous kernels, `torch.utils.benchmark`; the profiler;
# 2. a data-loading bottleneck, found and fixed;
# 3. more than one process: `torch.multiprocessing` and `torch.distributed`, and `DistributedDataParallel`
#    run for real with two processes, launched with `torchrun` and with `mp.spawn`;
# 4. one process, faster: mixed precision (`autocast`, `GradScaler`), `torch.compile`, optimizer flags;
# 5. memory: activation checkpointing and peak memory;
# 6. smaller models: dynamic int8 quantization, 4-bit loading (what it needs), pruning, Conv+BN fusion.
#
# The numbers you will see are measured on the machine that runs this notebook, so they differ from ours and
# from run to run: a shared 2-core laptop and a GPU server give very different speed-ups. That is the point.
#
# As in every lesson, each answer cell is graded on its own with only the lesson's imports around it: a helper,
# an import or a constant your answer needs belongs in that cell.

# %%
from grader import check, hint

# %%
import copy
import importlib
import io
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)   # "no CUDA runtime" on CPU machines
import torch.utils.benchmark as benchmark_utils  # noqa: E402  (after quieting the logger above)

torch.manual_seed(0)
# One intra-op thread: the small models here run faster on one than on several threads that wait for each
# other, and the comparisons below are fairer on a busy machine. The Timer section shows the thread count's effect.
torch.set_num_threads(1)
HAS_CUDA = torch.cuda.is_available()
WORKDIR = Path(tempfile.mkdtemp(prefix="torchdojo12_"))   # scripts and results of this lesson go here
speedups = {}                                             # what each trick bought on this machine: name -> ×


def median_time(fn, *args, warmup: int = 2, iters: int = 7) -> float:
    """Median seconds of fn(*args) after a warm-up (CPU only; the exercise below adds CUDA)."""
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# %% [markdown]
# ## 1. Timing correctly
#
# Timing code looks trivial — read the clock, run, read the clock — and is easy to get wrong in three ways:
#
# - **No warm-up.** The first call pays one-time costs: allocating memory, loading kernels, choosing algorithms
#   (`cudnn.benchmark`), compiling (`torch.compile`), filling caches. Run a few calls first and throw their
#   times away.
# - **One measurement.** Any single time is noisy: other programs, frequency scaling, the garbage collector.
#   Time many calls and take the **median**, which ignores the odd slow outlier that a mean would not.
# - **Forgetting that CUDA is asynchronous.** A CUDA operation only *queues* a kernel and returns at once; the
#   GPU runs it later. Reading the clock right after `y = model(x)` measures how long it took to queue the
#   work, not to do it. `torch.cuda.synchronize()` waits until the GPU has finished everything queued: call it
#   **before** starting the clock (so earlier work is not billed to you) and **before** stopping it. On the CPU
#   operations are synchronous and no synchronisation is needed.
#
# Use `time.perf_counter()`, a monotonic clock with the best resolution, never `time.time()` (which may jump
# when the system clock is adjusted). Here are the first calls of a small model one by one:

# %%
model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 256))
x = torch.randn(64, 256)
times = []
with torch.no_grad():
    for _ in range(30):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)

fig, ax = plt.subplots(figsize=(7, 2.8))
ax.bar(range(30), [t * 1e3 for t in times], color=["tab:red"] * 3 + ["tab:blue"] * 27)
ax.axhline(statistics.median(times[3:]) * 1e3, color="0.3", ls="--", lw=1, label="median after warm-up")
ax.set_xlabel("call")
ax.set_ylabel("ms")
ax.set_title("the same forward pass, timed call by call (red: warm-up)")
ax.legend()
plt.show()
print(f"first call {times[0] * 1e3:.2f} ms, median of the rest {statistics.median(times[3:]) * 1e3:.2f} ms")

# %% [markdown]
# On a GPU the difference between forgetting and remembering to synchronise is dramatic. This cell runs only
# where CUDA is present:

# %%
if HAS_CUDA:
    a = torch.randn(4096, 4096, device="cuda")
    a @ a                                                      # warm-up: cuBLAS initialises itself
    torch.cuda.synchronize()
    start = time.perf_counter()
    a @ a                                                      # only queued
    queued = time.perf_counter() - start
    torch.cuda.synchronize()
    start = time.perf_counter()
    a @ a
    torch.cuda.synchronize()                                   # wait for the GPU
    done = time.perf_counter() - start
    print(f"without synchronize {queued * 1e3:.3f} ms, with synchronize {done * 1e3:.3f} ms")
else:
    print("no CUDA device here: CPU operations finish before they return, so nothing to synchronise")

# %% [markdown]
# ### `torch.utils.benchmark`
#
# PyTorch ships a timer that does all of this for you: `torch.utils.benchmark.Timer` warms up, synchronises CUDA,
# runs the statement in blocks until the measurement is stable (`blocked_autorange`) and reports the median and
# the spread. It also fixes the number of threads (one by default — pass `num_threads=` to change it), so
# results are comparable between runs. `Compare` puts several measurements in one table.

# %%
results = []
for n in (64, 256):
    xs = torch.randn(n, 256)
    for threads in (1, 2):
        timer = benchmark_utils.Timer(stmt="model(x)", globals={"model": model, "x": xs}, num_threads=threads,
                                      label="MLP forward", sub_label=f"batch {n}", description=f"{threads} thread(s)")
        results.append(timer.blocked_autorange(min_run_time=0.1))
print(results[0])                                  # one Measurement: median and interquartile range
benchmark_utils.Compare(results).print()

# %% [markdown]
# ## Exercise: `benchmark`
#
# Write `benchmark(fn, *args, warmup=3, iters=10)` that:
#
# - raises `ValueError` when `iters < 1`;
# - calls `fn(*args)` exactly `warmup + iters` times: first `warmup` calls that are not timed, then `iters`
#   calls each timed on its own with `time.perf_counter()`;
# - when any positional argument is a CUDA tensor, calls `torch.cuda.synchronize()` right before starting and
#   right before stopping the clock of each timed call (and never otherwise — there may be no GPU at all);
# - returns `statistics.median` of the `iters` times, in **seconds**, as a float.

# %%
def benchmark(fn, *args, warmup: int = 3, iters: int = 10) -> float:
    """Median seconds of fn(*args) over `iters` timed calls after `warmup` untimed ones."""
    ### BEGIN SOLUTION
    import statistics
    import time

    if iters < 1:
        raise ValueError(f"iters must be at least 1, got {iters}")
    on_cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(iters):
        if on_cuda:
            torch.cuda.synchronize()                 # earlier queued work is not ours
        start = time.perf_counter()
        fn(*args)
        if on_cuda:
            torch.cuda.synchronize()                 # wait until the GPU has really finished
        times.append(time.perf_counter() - start)
    return statistics.median(times)
    ### END SOLUTION


# %%
check(benchmark)

# %% [markdown]
# ## 2. The profiler: where does the time go?
#
# A timer says *how long*; the profiler says *where*. `torch.profiler.profile` records every operator that
# runs inside it (on the CPU and, with `ProfilerActivity.CUDA`, the GPU kernels), with its time, the shapes of
# its inputs (`record_shapes=True`) and the memory it allocates (`profile_memory=True`). `record_function`
# labels a block of your own code so that it shows up as one row. Here is one training step of a small model:

# %%
from torch.profiler import ProfilerActivity, profile, record_function

model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(256, 512), torch.randint(0, 10, (256,))


def train_step():
    with record_function("forward"):
        loss = F.cross_entropy(model(x), y)
    with record_function("backward"):
        optimizer.zero_grad()
        loss.backward()
    with record_function("optimizer step"):
        optimizer.step()


train_step()                                             # warm-up, outside the profiler
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if HAS_CUDA else [])
with profile(activities=activities, record_shapes=True, profile_memory=True) as prof:
    for _ in range(3):
        train_step()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))

# %% [markdown]
# **Reading the table.** Each row is one kind of operator, summed over the three steps:
#
# - **Self CPU** is the time spent in the operator itself; **CPU total** includes the operators it called.
#   `aten::linear` has a large total but little self time: it only calls `aten::addmm` (the matrix product
#   with the bias), which does the work. Sort by self time to find what actually costs.
# - The top rows are matrix products: `aten::addmm` in the forward pass and `aten::mm` in the backward pass
#   (`AddmmBackward0` asks for two products per layer, one for the input's gradient and one for the weight's;
#   the first layer skips the first, as its input needs no gradient). A linear layer's backward costs about
#   twice its forward.
# - Our labels `forward`, `backward` and `optimizer step` are rows too, with little self time but a large
#   total (sort by `cpu_time_total` to see them first): they show how the step divides — printed under the
#   picture below.
# - **# of Calls** counts calls: a surprisingly large count (thousands of tiny ops) points at Python loops
#   that should be one tensor operation.
# - **CPU Mem** / **Self CPU Mem** is memory allocated (negative: freed) by the operator.
#
# `prof.export_chrome_trace("trace.json")` saves a timeline that you can open in `chrome://tracing` or
# [Perfetto](https://ui.perfetto.dev); `torch.profiler.schedule` and `tensorboard_trace_handler` profile a few
# steps of a long training run. (The profiler may print a few log lines of its own, such as `profiler_start`,
# and on a CUDA build of PyTorch without a GPU a harmless `gpuGetDeviceCount failed`.) The table as a picture:

# %%
events = sorted((e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")),
                key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.barh([e.key for e in events][::-1], [e.self_cpu_time_total / 1e3 / 3 for e in events][::-1])
ax.set_xlabel("self CPU time per step (ms)")
ax.set_title("where one training step spends its time")
plt.tight_layout()
plt.show()
labels = {e.key: e.cpu_time_total / 1e3 / 3 for e in prof.key_averages()
          if e.key in ("forward", "backward", "optimizer step")}
print("per step:", ", ".join(f"{k} {v:.1f} ms" for k, v in labels.items()))

# %% [markdown]
# ## 3. Data loading: the bottleneck outside the model
#
# If the GPU (or the CPU's math) waits for the next batch, no model optimisation helps. The usual sign: the
# model's step is fast when you feed it one batch over and over, and training is still slow. The cure is to
# prepare batches **in parallel and ahead of time**: `DataLoader(num_workers=N)` starts N worker processes that
# each call `dataset[i]` and collate batches while the main process trains; `prefetch_factor` batches per
# worker are prepared in advance, `persistent_workers=True` keeps the workers between epochs, and
# `pin_memory=True` puts batches in page-locked memory so that `.to("cuda", non_blocking=True)` overlaps the
# copy with computation.
#
# Below, a dataset pretends to decode a file for every sample (a 10 ms sleep, like reading and decoding a large
# JPEG).
# The worker processes must be able to import the dataset's class: on Windows and macOS workers are *spawned*
# (a fresh Python that imports your code), and a class defined in a notebook cannot be imported. So the lesson
# writes it to a small module and imports it from there — a good habit for any real project.

# %%
SLOW_DATA_MODULE = '''\
"""A dataset whose samples are slow to produce, like images decoded from disk."""
import time

import torch
from torch.utils.data import Dataset


class SlowDataset(Dataset):
    """n samples of 32 features; each one takes `delay` seconds to "decode"."""

    def __init__(self, n: int, delay: float = 0.01):
        self.n, self.delay = n, delay

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        time.sleep(self.delay)                                   # the slow part: I/O and decoding
        g = torch.Generator().manual_seed(i)
        return torch.randn(32, generator=g), i % 2
'''
(WORKDIR / "slow_data.py").write_text(SLOW_DATA_MODULE)
sys.path.insert(0, str(WORKDIR))
from slow_data import SlowDataset  # noqa: E402  (written just above)

dataset = SlowDataset(128)
model = nn.Linear(32, 2)


def epoch(loader):
    """One pass of a trivial model over the loader; returns the seconds it took."""
    start = time.perf_counter()
    for xb, yb in loader:
        F.cross_entropy(model(xb), yb).backward()
    return time.perf_counter() - start


loading = {}
for workers in (0, 2):
    loading[f"num_workers={workers}"] = epoch(DataLoader(dataset, batch_size=32, num_workers=workers))
loading["the model alone"] = epoch([next(iter(DataLoader(dataset, batch_size=32)))] * 4)   # one batch, 4 times
speedups["DataLoader num_workers=2"] = loading["num_workers=0"] / loading["num_workers=2"]

fig, ax = plt.subplots(figsize=(6, 2.6))
ax.barh(list(loading)[::-1], list(loading.values())[::-1], color="tab:green")
ax.set_xlabel("seconds per epoch (128 samples)")
ax.set_title("the model waits for the data")
plt.tight_layout()
plt.show()
print({k: f"{v:.3f} s" for k, v in loading.items()})

# %% [markdown]
# The model itself needs almost nothing; the epoch's time is the dataset's. Worker processes divide it (our
# dataset only waits, so workers help even on a busy machine; real decoding needs CPU, so more workers than
# cores stop helping, and DataLoader warns when you ask for more than the machine suggests). Starting workers costs time too, which is why `persistent_workers=True` matters when epochs
# are short. The same diagnosis works on any training loop: time an epoch with the real loader, then with one
# batch repeated. If they differ a lot, the data is the bottleneck.

# %% [markdown]
# ## 4. More than one process
#
# ### `torch.multiprocessing` and `torch.distributed`
#
# These two modules sound alike and do different jobs:
#
# - **`torch.multiprocessing`** is Python's `multiprocessing` with one addition: tensors sent to another process
#   travel through **shared memory** instead of being copied (`tensor.share_memory_()`). It starts processes on
#   *one* machine and lets them share data. `DataLoader` workers use it, and so does `mp.spawn(fn, args,
#   nprocs)`, which starts `nprocs` fresh processes that each run `fn(rank, *args)`.
# - **`torch.distributed`** is *communication* between processes that may run on different machines: a
#   **process group** of `world_size` processes, each with its **rank** `0..world_size-1`, and **collective
#   operations** that all of them call together: `all_reduce` (every rank ends with the sum, or the max, … of
#   everybody's tensor), `broadcast` (rank 0's tensor to all), `all_gather`, `reduce_scatter`, `barrier`. It
#   does not start processes: a launcher (`torchrun`, `mp.spawn`, a cluster's scheduler) does.
#
# A **backend** carries the messages: **gloo** runs on CPUs (and is the one to use for CPU tensors), **NCCL**
# between NVIDIA GPUs (over NVLink or the network, much faster), MPI where a cluster provides it. Processes
# find each other through a **rendezvous**: `init_method="env://"` reads `MASTER_ADDR`, `MASTER_PORT`, `RANK`
# and `WORLD_SIZE` from the environment (torchrun sets them), `"tcp://host:port"` names rank 0's address,
# `"file:///path"` uses a file that every process can see (no port needed).

# %%
shared = torch.zeros(3).share_memory_()
print("in shared memory:", shared.is_shared(), "· backends here: gloo", dist.is_gloo_available(),
      "· nccl", dist.is_nccl_available())

# %% [markdown]
# ### `DistributedDataParallel`: data parallelism
#
# The workhorse of multi-process training is **data parallelism**: every process (one per GPU, or here one per
# CPU process) holds a full copy of the model and trains on its own slice of each batch. After `backward()`,
# the gradients are **averaged** across processes with an all-reduce, so every copy takes exactly the same
# optimizer step and the copies stay identical. With N processes the batch is N times larger for the same
# time per step.
#
# `DistributedDataParallel(model)` (DDP) does the bookkeeping:
#
# - at construction it **broadcasts rank 0's parameters and buffers**, so all copies start equal (the script
#   below seeds every rank differently on purpose to show it);
# - during `backward()` it all-reduces the gradients in **buckets** while the rest of the backward pass still
#   runs, overlapping communication with computation;
# - `DistributedSampler` gives every rank a different shard of the data set (call `sampler.set_epoch(epoch)`
#   so the shuffling changes between epochs).
#
# Rank 0 usually does the printing, logging and checkpointing (`if dist.get_rank() == 0:`); save
# `ddp_model.module.state_dict()`, the wrapped model's, not the wrapper's (whose keys start with `module.`).
#
# The training script below is written to a file, because every process runs it from the start. Its
# `train(rank, world_size, init_method, out_dir, backend)` is one process's whole life: join the group, do a
# first collective, train with DDP, save its parameters, leave the group.

# %%
DDP_SCRIPT = '''\
"""Train a tiny model with DistributedDataParallel; every rank saves the parameters it ends with."""
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def checksum(model) -> float:
    """One number that changes when any parameter does."""
    return sum(p.detach().double().sum().item() for p in model.parameters())


def train(rank: int, world_size: int, init_method: str, out_dir: str, backend: str = "gloo"):
    """One process of the group: the same model, its own shard of the data, averaged gradients."""
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
    if backend == "nccl":                                    # one GPU per process
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")

    total = torch.tensor([rank + 1.0], device=device)
    dist.all_reduce(total)                                   # in place; the default op is SUM
    print(f"rank {rank}: all_reduce of (rank + 1) over {world_size} ranks = {total.item():.0f}", flush=True)

    torch.manual_seed(rank)                                  # different weights on purpose ...
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).to(device)
    before = checksum(model)
    ddp = DDP(model, device_ids=[device.index] if backend == "nccl" else None)   # ... rank 0's win
    print(f"rank {rank}: checksum {before:+.6f} before DDP, {checksum(model):+.6f} after", flush=True)

    g = torch.Generator().manual_seed(0)                     # the same data set on every rank
    x = torch.randn(512, 8, generator=g)                     # (N, 8)
    y = x.sum(dim=1, keepdim=True).sin()                     # (N, 1)
    data = TensorDataset(x, y)
    sampler = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=32, sampler=sampler)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for epoch in range(4):
        sampler.set_epoch(epoch)                             # a new shuffle, the same on every rank
        for xb, yb in loader:
            loss = F.mse_loss(ddp(xb.to(device)), yb.to(device))
            optimizer.zero_grad()
            loss.backward()                                  # gradients are averaged across ranks here
            optimizer.step()
    print(f"rank {rank}: {len(sampler)} of {len(data)} samples per epoch, last loss {loss.item():.4f}, "
          f"checksum after training {checksum(model):+.10f}", flush=True)
    state = {k: v.cpu() for k, v in ddp.module.state_dict().items()}
    torch.save(state, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    # torchrun starts this file once per process and tells each who it is through environment variables
    out_dir = sys.argv[1]
    backend = sys.argv[2] if len(sys.argv) > 2 else "gloo"
    train(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://", out_dir, backend)
'''
(WORKDIR / "ddp_train.py").write_text(DDP_SCRIPT)


def same_on_every_rank(out_dir, world_size: int = 2) -> bool:
    """Load each rank's saved state_dict and compare them exactly with rank 0's."""
    states = [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    return all(torch.equal(states[0][k], s[k]) for s in states[1:] for k in states[0])


# %% [markdown]
# ### Launching with `torchrun`
#
# `torchrun --nproc_per_node=2 ddp_train.py OUT` starts two copies of the script on this machine, sets `RANK`,
# `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT` in each one's environment, watches them and stops
# them all if one fails. `--standalone` runs its own rendezvous on a free port of this machine; on several
# machines you pass `--nnodes=2 --node_rank=... --rdzv-endpoint=host:port` instead. `torchrun` is the same as
# `python -m torch.distributed.run`, which is what we call here so that it is this notebook's Python that runs.
# `OMP_NUM_THREADS=1` keeps the two processes from fighting over the cores.

# %%
torchrun_out = WORKDIR / "torchrun"
torchrun_out.mkdir()
command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKDIR / "ddp_train.py"), str(torchrun_out)]
print("$ torchrun --standalone --nproc_per_node=2 ddp_train.py", torchrun_out.name)
start = time.perf_counter()
run = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
print("".join(sorted(run.stdout.splitlines(keepends=True))))      # the ranks print in any order
if run.returncode != 0:
    print(run.stderr[-3000:])
print(f"exit code {run.returncode} after {time.perf_counter() - start:.1f} s;",
      "identical parameters on both ranks:", run.returncode == 0 and same_on_every_rank(torchrun_out))

# %% [markdown]
# Read the output: the all-reduce gives 1 + 2 = 3 on both ranks; the checksums differ before DDP (different
# seeds) and agree right after it (rank 0's weights were broadcast); each rank saw only half of the 512
# samples per epoch; and after training both ranks hold exactly the same parameters, although each one
# computed its gradients on different data. Their losses differ: each is the loss of its own last batch.
#
# ### Launching from a notebook with `mp.spawn`
#
# `mp.spawn(fn, args=(...), nprocs=2)` starts two fresh Python processes and calls `fn(rank, *args)` in each.
# *Fresh* matters: each child imports `fn` by its module's name, so `fn` must live in an importable module —
# a function defined in a notebook cell cannot be found by the children (on Linux `mp.start_processes(...,
# start_method="fork")` would inherit it, but forking a process that already runs threads is fragile, and
# Windows and macOS spawn). So we import `train` from the file written above. The rendezvous here is a file
# (`file://`), which needs no free port. The children's prints show up below (in some Jupyter setups they go
# to the terminal that started Jupyter instead), interleaved as the two processes write them; what counts is
# what they saved, which we read back.

# %%
import ddp_train  # noqa: E402  (written to WORKDIR above)

spawn_out = WORKDIR / "spawn"
spawn_out.mkdir()
start = time.perf_counter()
mp.spawn(ddp_train.train, args=(2, f"file://{WORKDIR / 'rendezvous'}", str(spawn_out)), nprocs=2, join=True)
print(f"mp.spawn finished in {time.perf_counter() - start:.1f} s")
for r in range(2):
    state = torch.load(spawn_out / f"rank{r}.pt", weights_only=True)
    print(f"rank {r}: checksum {sum(v.double().sum().item() for v in state.values()):+.10f}")
print("identical parameters on both ranks:", same_on_every_rank(spawn_out))
print("and the same as with torchrun:", torch.equal(torch.load(spawn_out / "rank0.pt", weights_only=True)["0.weight"],
                                                     torch.load(torchrun_out / "rank0.pt", weights_only=True)["0.weight"]))

# %% [markdown]
# ### On GPUs: NCCL, one process per GPU
#
# The same script trains on several GPUs with `backend="nccl"`: one process per GPU, each pinned to its device
# with `torch.cuda.set_device(LOCAL_RANK)`, tensors on that device, and `DDP(model, device_ids=[LOCAL_RANK])`.
# Launch it with `torchrun --nproc_per_node=NUM_GPUS ddp_train.py OUT nccl`. NCCL cannot reduce CPU tensors and
# gloo is slow for GPU tensors: pick the backend from where the tensors live. The next cell runs that path only
# where at least two GPUs are present.

# %%
if torch.cuda.device_count() >= 2:
    nccl_out = WORKDIR / "nccl"
    nccl_out.mkdir()
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(WORKDIR / "ddp_train.py"), str(nccl_out), "nccl"],
                         capture_output=True, text=True, timeout=300)
    print("".join(sorted(run.stdout.splitlines(keepends=True))) or run.stderr[-3000:])
    print("identical parameters on both GPUs:", run.returncode == 0 and same_on_every_rank(nccl_out))
else:
    print(f"{torch.cuda.device_count()} GPU(s) here: the NCCL run needs at least 2, skipped")

# %% [markdown]
# Beyond DDP: when the model itself does not fit on one GPU, **FSDP** (`torch.distributed.fsdp.fully_shard`)
# shards parameters, gradients and optimizer state across ranks and gathers each layer only while it is used;
# tensor and pipeline parallelism split single layers or the stack of layers. They all rest on the same
# process groups and collectives.
#
# ## Exercise: `all_reduce_mean`
#
# Write `all_reduce_mean(tensor)` for code that runs **inside an initialised process group** (every rank calls
# it with a tensor of the same shape): it returns a **new** floating tensor, on the input's device, holding the
# element-wise mean of the tensors of all ranks, and leaves the input unchanged. An integer tensor gives a
# result of the default floating dtype (`torch.get_default_dtype()`); a floating tensor keeps its dtype.
# (This is what DDP does to gradients.) The check runs it in real groups of two and three CPU processes on the
# gloo backend. Sum, then divide by `dist.get_world_size()`: that works on every backend.
# `ReduceOp.AVG` does both in one call, but only for floating tensors (the average is written into the tensor
# itself, and an integer tensor cannot hold it: it raises) and only where the backend has it: NCCL does, and so
# does gloo in the PyTorch installed here (2.14), while older PyTorch's gloo refused it.

# %%
def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `tensor` over all ranks of the default process group, as a new tensor."""
    ### BEGIN SOLUTION
    import torch.distributed as dist

    if tensor.is_floating_point():
        out = tensor.detach().clone()                     # all_reduce works in place: never on the input
    else:
        out = tensor.to(torch.get_default_dtype())       # a new floating tensor
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()
    ### END SOLUTION


# %%
check(all_reduce_mean)

# %% [markdown]
# ## 5. Mixed precision: `autocast` and `GradScaler`
#
# Most of a network's arithmetic does not need 32-bit floats. **Mixed precision** runs the operations that
# tolerate it (matrix products, convolutions) in a 16-bit type, which halves the memory traffic and uses the
# hardware's fast 16-bit units (tensor cores on GPUs, AMX/AVX-512-BF16 on recent CPUs), and keeps the
# sensitive ones (reductions, softmax, losses, normalisations) in float32. The weights stay float32.
#
# `with torch.autocast(device_type, dtype):` does this per operation, for the forward pass and the loss only;
# `backward()` goes outside it (each op's backward runs in the dtype its forward used). Autocast keeps a list
# of operations per device that run in 16 bits and a list that run in float32 (losses, for example); the
# others simply follow the dtype of their inputs. Two 16-bit types:
#
# | | exponent bits | mantissa bits | range | use |
# | --- | --- | --- | --- | --- |
# | `float16` | 5 | 10 | ±65504, smallest normal ≈ 6e-5 | CUDA; needs a `GradScaler` |
# | `bfloat16` | 8 | 7 | like float32 | CPU autocast, recent GPUs; no scaler needed |

# %%
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
x = torch.randn(8, 64)
with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
    hidden = model[0](x)                                  # a matrix product: bfloat16
    relu = hidden.relu()                                  # on neither list: follows its input
    loss = F.cross_entropy(model(x), torch.zeros(8, dtype=torch.long))   # on the float32 list
print("linear:", hidden.dtype, "· relu:", relu.dtype, "· loss:", loss.dtype, "· weights:", model[0].weight.dtype)
print("float16 loses small numbers:", torch.tensor(1e-8).half().item(), "· bfloat16 keeps them:",
      torch.tensor(1e-8).bfloat16().item(), "· but with 3 significant digits:", torch.tensor(1.001).bfloat16().item())

# %% [markdown]
# **Why float16 needs a `GradScaler`.** Gradients are often tiny; below about 6e-8 they become exactly 0 in
# float16 (*underflow*) and those weights stop learning. A `GradScaler` multiplies the loss by a large factor
# (65536 to start) before `backward()`, so the gradients are large enough to survive; `scaler.step(optimizer)`
# divides them back (*unscales*) and skips the step when any gradient is inf or nan (the factor was too large);
# `scaler.update()` then adjusts the factor — halved after an overflow, doubled after a run of good steps. The
# loop becomes:
#
# ```python
# scaler = torch.amp.GradScaler("cuda")
# with torch.autocast("cuda", dtype=torch.float16):
#     loss = loss_fn(model(x), y)
# scaler.scale(loss).backward()
# scaler.unscale_(optimizer)             # only if you clip gradients: clip after unscaling
# scaler.step(optimizer)
# scaler.update()
# ```
#
# bfloat16 has float32's range, so on the CPU (and with bfloat16 on GPUs) the scaler is not needed — but
# `torch.amp.GradScaler("cpu")` exists and works, so one loop can serve both. Is bfloat16 faster on *this* CPU?
# Only with hardware support; measure:

# %%
model = nn.Sequential(nn.Linear(512, 2048), nn.GELU(), nn.Linear(2048, 512))
x = torch.randn(128, 512)


def forward_fp32():
    with torch.no_grad():
        model(x)


def forward_bf16():
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)


fp32, bf16 = median_time(forward_fp32), median_time(forward_bf16)
speedups["autocast bfloat16 (CPU)"] = fp32 / bf16
print(f"float32 {fp32 * 1e3:.2f} ms · bfloat16 autocast {bf16 * 1e3:.2f} ms · speed-up ×{fp32 / bf16:.2f}")

scaler = torch.amp.GradScaler("cpu")
print("a GradScaler on the CPU starts with scale", scaler.get_scale())

# %% [markdown]
# On CPUs without bfloat16 instructions autocast can even be slower (the conversions cost, the products do not
# get faster). On a GPU with tensor cores float16/bfloat16 matrix products are several times faster than
# float32 ones. There, also try `torch.backends.cuda.matmul.allow_tf32 = True` (or
# `torch.set_float32_matmul_precision("high")`): float32 products on the tensor cores with a 10-bit mantissa.
#
# ## Exercise: `autocast_train_step`
#
# Write `autocast_train_step(model, batch, loss_fn, optimizer, device, scaler=None)` that performs one
# training step with mixed precision and returns the loss as a Python float:
#
# - `batch` is a pair `(x, y)`: move both to `device` (a `torch.device` or a string);
# - zero the gradients;
# - run the forward pass **and** the loss under `torch.autocast(device_type=..., dtype=...)`: bfloat16 on the
#   CPU, float16 on CUDA;
# - when a `scaler` is given (on any device), backward and step through it: `scaler.scale(loss).backward()`,
#   `scaler.step(optimizer)`, `scaler.update()`; otherwise `loss.backward()` and `optimizer.step()`;
# - return the **unscaled** loss (`loss.item()`);
# - leave the model's mode (`train`/`eval`) and device as they are: the caller chose them.

# %%
def autocast_train_step(model, batch, loss_fn, optimizer, device, scaler=None) -> float:
    """One mixed-precision training step (bfloat16 on CPU, float16 on CUDA); returns the loss."""
    ### BEGIN SOLUTION
    device = torch.device(device)
    x, y = (t.to(device) for t in batch)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    optimizer.zero_grad()
    with torch.autocast(device_type=device.type, dtype=dtype):
        loss = loss_fn(model(x), y)
    if scaler is not None:
        scaler.scale(loss).backward()                    # scaled: small gradients survive float16
        scaler.step(optimizer)                           # unscales; skips the step on inf/nan
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.item()
    ### END SOLUTION


# %%
check(autocast_train_step)

# %% [markdown]
# ## 6. `torch.compile`
#
# In eager mode every operation is a separate kernel: `gelu(x * 2 + 1) * 0.5` reads and writes the whole
# tensor four times. `torch.compile(fn_or_model)` captures the Python code into a graph (TorchDynamo), then
# the *Inductor* backend generates fused kernels (C++/OpenMP on CPUs, Triton on GPUs) that read the input once
# and write the output once. It compiles on the first call — seconds to minutes, far longer than the call
# itself — and recompiles when the shapes, dtypes or Python control flow it saw change (a "guard" fails). So it
# pays off for code that runs many times with the same shapes, like a training step; `mode="reduce-overhead"`
# also uses CUDA graphs, `mode="max-autotune"` searches for the fastest kernels, longer still.
#
# On the CPU Inductor needs a working C++ compiler; on Windows and some platforms it is not supported at all.
# The cell below tries, and reports instead of failing:

# %%
def pointwise(x):
    return F.gelu(x * 2 + 1) * 0.5 + x.sin()             # five ops in eager mode, one fused loop compiled


x = torch.randn(1024, 1024)
try:
    compiled = torch.compile(pointwise)
    start = time.perf_counter()
    compiled(x)                                          # the first call compiles
    first_call = time.perf_counter() - start
    eager, fused = median_time(pointwise, x), median_time(compiled, x)
    speedups["torch.compile (pointwise)"] = eager / fused
    print(f"first call (compiling): {first_call:.1f} s")
    print(f"eager {eager * 1e3:.2f} ms · compiled {fused * 1e3:.2f} ms · speed-up ×{eager / fused:.2f}")
    print("same result:", torch.allclose(pointwise(x), compiled(x), atol=1e-5))
except Exception as e:                                   # no C++ compiler, unsupported platform, ...
    print(f"torch.compile failed here ({type(e).__name__}: {str(e)[:200]})")
    print("install a C++ compiler (Linux: g++; macOS: Xcode command line tools) or run on Linux/Colab;"
          " everything else in this lesson works without it")

# %% [markdown]
# `torch.compile(model)` works the same on an `nn.Module` (the parameters stay shared with the original). When
# something does not compile, `torch._dynamo.explain(fn)(x)` lists the *graph breaks* (Python that Dynamo
# cannot capture, such as `.item()` or printing) and `TORCH_LOGS=recompiles` shows why it recompiled.
#
# ## 7. Optimizer implementation flags: `foreach` and `fused`
#
# A model has many parameter tensors, and the textbook optimizer updates them one by one in a Python loop —
# for small tensors the loop, not the arithmetic, is the cost. PyTorch's optimizers have three implementations
# of the same update:
#
# - `foreach=False`: the plain per-tensor loop;
# - `foreach=True` (the default on CUDA): *multi-tensor* kernels that update lists of tensors at once;
# - `fused=True` (Adam, AdamW, SGD and a few more; CUDA, CPU, MPS): the whole update in one kernel per group.
#
# They compute the same update, up to floating-point rounding:

# %%
def many_small_params():
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(32, 32) for _ in range(20)])


step_times, finals = {}, {}
for flags in ({"foreach": False}, {"foreach": True}, {"fused": True}):
    net = many_small_params()
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.01)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, **flags)
    name = ", ".join(f"{k}={v}" for k, v in flags.items())
    step_times[name] = median_time(opt.step, warmup=1, iters=5)
    finals[name] = torch.cat([p.detach().flatten() for p in net.parameters()])
base = step_times["foreach=False"]
for name, t in step_times.items():
    print(f"AdamW step with {name:<14} {t * 1e3:6.2f} ms  ×{base / t:.2f}  "
          f"max difference {(finals[name] - finals['foreach=False']).abs().max():.1e}")
speedups["AdamW fused=True"] = base / step_times["fused=True"]

# %% [markdown]
# ## 8. Memory: activation checkpointing and peak memory
#
# Training memory is parameters + gradients + optimizer state (Adam keeps two more copies) + **activations**:
# every tensor that the backward pass needs is kept from the forward pass until it is used. For deep networks
# and long sequences the activations dominate, and they grow with the batch size.
#
# **Activation checkpointing** (`torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)`) keeps only
# the *input* of a block during the forward pass and runs the block's forward a second time during backward
# to get the rest back. It trades compute (about one more forward pass) for memory. `checkpoint_sequential`
# does it segment by segment for an `nn.Sequential`.
#
# How to measure memory honestly:
#
# - on CUDA, `torch.cuda.reset_peak_memory_stats()` then `torch.cuda.max_memory_allocated()` gives the peak of
#   PyTorch's allocator in bytes (`torch.cuda.memory_summary()` for the details);
# - on the CPU PyTorch has no such counter, and Python's `tracemalloc` does not see tensor memory (it is
#   allocated in C++). What we can count exactly is what autograd **saves for backward**:
#   `torch.autograd.graph.saved_tensors_hooks` sees every tensor as it is saved. (The profiler with
#   `profile_memory=True` also records allocations per operator.)

# %%
def saved_for_backward(fn, x) -> int:
    """Bytes of the tensors that autograd keeps for backward while fn(x) runs (each storage once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x)
    return out, sum(storages.values())


from torch.utils.checkpoint import checkpoint  # noqa: E402

blocks = nn.ModuleList(nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)) for _ in range(6))
x = torch.randn(512, 256, requires_grad=True)


def plain(x):
    for block in blocks:
        x = x + block(x)
    return x.sum()


def checkpointed(x):
    for block in blocks:
        x = x + checkpoint(block, x, use_reentrant=False)      # keeps only the block's input
    return x.sum()


memory, grads = {}, {}
for name, fn in (("plain", plain), ("checkpointed", checkpointed)):
    loss, memory[name] = saved_for_backward(fn, x)
    start = time.perf_counter()
    loss.backward()
    grads[name] = (x.grad.clone(), time.perf_counter() - start)
    x.grad = None
print({k: f"{v / 2**20:.1f} MiB saved for backward" for k, v in memory.items()})
print("same gradients:", torch.allclose(grads["plain"][0], grads["checkpointed"][0], atol=1e-5),
      f"· backward {grads['plain'][1] * 1e3:.0f} ms plain, {grads['checkpointed'][1] * 1e3:.0f} ms checkpointed")

if HAS_CUDA:
    cuda_blocks = copy.deepcopy(blocks).cuda()
    for name, wrap in (("plain", lambda b, h: b(h)), ("checkpointed", lambda b, h: checkpoint(b, h, use_reentrant=False))):
        h = torch.randn(512, 256, device="cuda", requires_grad=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        out = h
        for block in cuda_blocks:
            out = out + wrap(block, out)
        out.sum().backward()
        print(f"CUDA peak with {name}: {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")

fig, ax = plt.subplots(figsize=(5, 2.2))
ax.barh(list(memory)[::-1], [v / 2**20 for v in memory.values()][::-1], color="tab:purple")
ax.set_xlabel("MiB kept for backward")
ax.set_title("activation checkpointing: 6 residual MLP blocks")
plt.tight_layout()
plt.show()

# %% [markdown]
# Other ways to save memory: smaller batches with **gradient accumulation** (several `backward()` before one
# `step()`), mixed precision (16-bit activations), `optimizer.zero_grad(set_to_none=True)` (the default),
# `torch.no_grad()` / `torch.inference_mode()` for evaluation, and, across GPUs, FSDP.
#
# ## 9. Smaller models: quantization, pruning and fusion
#
# ### Dynamic int8 quantization
#
# A trained model's weights can be stored as 8-bit integers with one float scale per tensor (or per channel):
# 4× smaller than float32. **Dynamic quantization** converts the weights of `nn.Linear` (and LSTM) layers
# ahead of time and quantizes each input batch on the fly, so the matrix products run in int8 on the CPU —
# no calibration data needed. It is a post-training step for inference on CPUs.
#
# `torch.ao.quantization.quantize_dynamic` is the classic API. In recent PyTorch (2.14 here) it is
# **deprecated**: quantization moved to the separate [`torchao`](https://github.com/pytorch/ao) package, where
# the same thing is `torchao.quantization.quantize_(model, Int8DynamicActivationInt8WeightConfig())`. The old
# function still works and torchao is not installed here, so we use it and silence its deprecation warning;
# where it is gone, install torchao and use `quantize_`.

# %%
def state_size(model) -> int:
    """Bytes of the model's saved state_dict."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


torch.manual_seed(0)
float_model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)).eval()
x = torch.randn(64, 512)
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # the deprecation warnings of torch.ao.quantization
        from torch.ao.quantization import quantize_dynamic
        int8_model = quantize_dynamic(float_model, {nn.Linear}, dtype=torch.qint8)
        with torch.no_grad():
            fp32, int8 = median_time(float_model, x), median_time(int8_model, x)
            error = (float_model(x) - int8_model(x)).abs().max().item()
    print(int8_model[0])
    print(f"size {state_size(float_model) / 2**20:.2f} MiB -> {state_size(int8_model) / 2**20:.2f} MiB · "
          f"forward {fp32 * 1e3:.2f} ms -> {int8 * 1e3:.2f} ms · largest output difference {error:.4f}")
    speedups["dynamic int8 quantization"] = fp32 / int8
except (ImportError, RuntimeError) as e:
    print(f"quantize_dynamic is not available here ({e}); use torchao's quantize_ instead")

# %% [markdown]
# ### QLoRA-style 4-bit loading: what it needs
#
# Large language models are fine-tuned on one GPU by loading the frozen base model in **4 bits** per weight
# (the NF4 format, with a float scale per block of 64 weights) and training small **LoRA** adapters in 16-bit
# on top — QLoRA. A 7-billion-parameter model then needs about 3.5 GB for its weights instead of 14 GB in
# bfloat16. It needs:
#
# - the `bitsandbytes` package and an **NVIDIA GPU** (its 4-bit kernels are CUDA kernels; support for other
#   hardware is partial);
# - Hugging Face `transformers` (lesson 11): `AutoModelForCausalLM.from_pretrained(name,
#   quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
#   bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True))`;
# - `peft` for the adapters: `get_peft_model(model, LoraConfig(r=16, target_modules=[...]))`.
#
# The 4-bit weights are unpacked to bfloat16 on the fly for every matrix product: memory shrinks, speed does
# not improve. This notebook only checks whether the pieces are there:

# %%
have_bnb = importlib.util.find_spec("bitsandbytes") is not None
print(f"bitsandbytes installed: {have_bnb} · CUDA: {HAS_CUDA} ->",
      "4-bit loading possible" if have_bnb and HAS_CUDA else "4-bit loading not possible here")
for params in (7e9, 70e9):
    print(f"{params / 1e9:.0f}B parameters: float32 {params * 4 / 1e9:5.0f} GB · bfloat16 {params * 2 / 1e9:5.0f} GB"
          f" · int8 {params / 1e9:5.0f} GB · 4-bit {params / 2 / 1e9:5.1f} GB")

# %% [markdown]
# ### Pruning
#
# **Pruning** sets unimportant weights to zero — for example the 50% with the smallest magnitude.
# `torch.nn.utils.prune` does it with a mask: `prune.l1_unstructured(layer, "weight", amount=0.5)` replaces
# the parameter `weight` by `weight_orig` (a parameter) times `weight_mask` (a buffer), recomputed before each
# forward, so the zeros stay zero during fine-tuning; `prune.remove(layer, "weight")` makes it permanent.
# Beware: a dense tensor full of zeros is exactly as large and as slow as before. Pruning pays only with
# sparse storage and kernels, or with *structured* pruning (`prune.ln_structured` removes whole rows or
# channels, which can then be cut out of the layer).

# %%
from torch.nn.utils import prune  # noqa: E402

layer = nn.Linear(8, 4)
reference = layer.weight.detach().clone()
prune.l1_unstructured(layer, "weight", amount=0.5)
print(sorted(name for name, _ in layer.named_parameters()), sorted(name for name, _ in layer.named_buffers()))
kept = reference.abs() > reference.abs().flatten().kthvalue(16).values    # all but the 16 smallest of 32
print("zeros:", (layer.weight == 0).float().mean().item(), "· the smallest half removed:",
      torch.equal(layer.weight, reference * kept))
x = torch.randn(3, 8)
print("pruned layer = the masked weights:", torch.allclose(layer(x), F.linear(x, reference * kept, layer.bias)))
prune.remove(layer, "weight")
print("after prune.remove:", [name for name, _ in layer.named_parameters()])

# %% [markdown]
# ### Conv + BatchNorm fusion
#
# In evaluation mode a `BatchNorm2d` is a fixed per-channel affine map, `y = (x - mean) / sqrt(var + eps) *
# gamma + beta`, and it directly follows a convolution, itself affine. The two fold into **one** convolution
# with rescaled weights and a new bias: one kernel instead of two, and one less pass over the activations.
# `torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)` builds it (both modules in eval mode); the result is the
# same up to rounding. It is only valid for inference: in training mode BatchNorm uses batch statistics.

# %%
from torch.nn.utils.fusion import fuse_conv_bn_eval  # noqa: E402

conv, bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
with torch.no_grad():
    for _ in range(5):                                   # a few training batches give non-trivial statistics
        bn(conv(torch.randn(16, 3, 12, 12) * 2 + 1))
conv.eval(), bn.eval()
fused = fuse_conv_bn_eval(conv, bn)
x = torch.randn(4, 3, 12, 12)
with torch.no_grad():
    two, one = bn(conv(x)), fused(x)
print(fused, "· same in eval:", torch.allclose(two, one, atol=1e-5), f"(max difference {(two - one).abs().max():.1e})")
with torch.no_grad():
    unfused_time, fused_time = median_time(lambda t: bn(conv(t)), x), median_time(fused, x)
speedups["Conv+BN fusion"] = unfused_time / fused_time

# %% [markdown]
# ## What each trick bought here
#
# The speed-ups measured in this notebook, on this machine (×1 = no change, below 1 = slower):

# %%
names = list(speedups)
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.barh(names[::-1], [speedups[n] for n in names][::-1],
        color=["tab:green" if speedups[n] >= 1 else "tab:red" for n in names][::-1])
ax.axvline(1, color="0.3", lw=1)
ax.set_xlabel("speed-up (×)")
ax.set_title("measured on this machine")
plt.tight_layout()
plt.show()
for name in names:
    print(f"{name:<28} ×{speedups[name]:.2f}")

# %% [markdown]
# ## Summary
#
# - **Measure first.** Warm up, time many calls and take the median, use `time.perf_counter()`, and call
#   `torch.cuda.synchronize()` before starting and stopping the clock on CUDA; `torch.utils.benchmark.Timer`
#   does all of it. The profiler (`torch.profiler.profile`, sort the table by self time, `record_function` for
#   your own labels) shows *where* the time goes.
# - **Data loading** is the first suspect when training is slow and the model is not: compare an epoch with a
#   batch repeated; `num_workers`, `pin_memory`, `persistent_workers` fix it (the bar chart of section 3).
# - **`torch.multiprocessing`** starts processes on one machine and shares tensors; **`torch.distributed`**
#   connects a process group (ranks, `world_size`, collectives like `all_reduce`) over gloo (CPU) or NCCL
#   (GPUs). **DDP** broadcasts rank 0's weights, averages gradients during `backward()`, and keeps every
#   copy identical — as the two ranks' equal parameters showed, launched with `torchrun --nproc_per_node=2` and
#   with `mp.spawn` (the function in an importable module).
# - **Mixed precision**: `torch.autocast` around forward and loss (bfloat16 on CPU, float16 on CUDA); a
#   `GradScaler` against float16 underflow. **`torch.compile`** fuses operations after a slow first call.
#   **`fused=True` / `foreach=True`** optimizers update many tensors at once.
# - **Memory**: activations dominate; checkpointing trades a second forward for them (the memory bars);
#   `torch.cuda.max_memory_allocated` measures the peak on GPUs.
# - **Smaller models**: dynamic int8 quantization (`quantize_dynamic`, now torchao's `quantize_`) makes Linear
#   layers 4× smaller; QLoRA's 4-bit loading needs bitsandbytes and a CUDA GPU; pruning zeroes weights (smaller
#   or faster only with sparse or structured formats); Conv+BN fusion folds BatchNorm into the convolution for
#   inference, with identical outputs.
# - The final bar chart is this machine's answer to "what is worth it?": yours will differ. Measure again.
