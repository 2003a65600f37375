# %% [markdown]
# # 00 · Setup: your install, your devices, and how this course checks your work
#
# Welcome to torchdojo. Every lesson is a notebook like this one: short explanations, small examples you can
# run and change, and exercises. Each exercise is a function (or class) with a stub that raises
# `NotImplementedError`; you replace the stub with your code and run the **check cell** under it. The check
# tries your code on many inputs, on every device this machine has, and tells you precisely what is wrong.
#
# Run cells with **Shift+Enter**. Run them in order: later cells use what earlier cells define.
#
# There is one exception to that: each exercise's cell must stand on its own. When your notebook is graded, only
# the exercise cells are run (after the lesson's imports), so a helper function, an import or a variable that your
# answer needs goes into the exercise's cell itself, not into a cell of its own.

# %%
from grader import check, hint, progress

# %% [markdown]
# ## 1. Is PyTorch installed, and which one?
#
# `torch.__version__` tells you the release, and the part after `+` tells you the build: `+cpu` is a
# CPU-only build, `+cu126` was built against CUDA 12.6, and no suffix usually means a macOS or default build.
# torchvision (datasets, image transforms and models) is released in lock-step with torch: each torchvision
# release works with exactly one torch release, so install them together.

# %%
import torch
import torchvision

print("torch      ", torch.__version__)
print("torchvision", torchvision.__version__)
print("CUDA build ", torch.version.cuda)  # None on a CPU-only build

# %% [markdown]
# ### Which Python is running this notebook?
#
# A notebook does not run "the" Python of your machine: it runs the Python of its **kernel**, chosen in the
# top-right corner of JupyterLab (or Colab's runtime). Many machines have several Pythons — the system's, a
# conda environment, a virtual environment per project — and `pip install torch` in a terminal installs into
# whichever `python` that terminal finds first. If that is not the kernel's Python, `import torch` fails in
# the notebook, or imports an older copy installed long ago.
#
# `sys.executable` is the path of the kernel's Python, and `torch.__file__` tells you where the `torch` you
# imported lives: both should point into the environment you meant. To install into exactly this kernel from
# inside the notebook, use the `%pip install ...` magic (not `!pip`, which runs whatever `pip` the shell finds).
# In a terminal, `python -m pip install ...` ties pip to that `python`.

# %%
import sys

print("Python     ", sys.version.split()[0])
print("executable ", sys.executable)       # the kernel's interpreter
print("environment", sys.prefix)           # the environment it belongs to
print("torch from ", torch.__file__)

# %% [markdown]
# ### Which processor, and why it decides what `pip` installs
#
# PyTorch is mostly compiled C++ and CUDA code, so it is shipped as **wheels**: archives built in advance
# for one Python version, one operating system and one **processor architecture**. `pip` reads the tags in
# a wheel's file name (for example `cp312-cp312-manylinux_2_28_x86_64`) and installs only a wheel whose tags
# your interpreter accepts; when no wheel matches, you get an old release or "no matching distribution".
#
# `platform.machine()` names the architecture: `x86_64` (or `AMD64` on Windows) for Intel and AMD
# processors, `arm64` for Apple-silicon Macs, `aarch64` for ARM Linux machines. It matters because:
#
# - CUDA builds are published for particular architectures and operating systems (x86_64 Linux and
#   Windows above all); on a Mac there is no CUDA at all, and the GPU is used through `mps` instead.
# - PyTorch stopped publishing wheels for Intel Macs after release 2.2. An Apple-silicon Mac can also run
#   an x86_64 Python through its Rosetta translator; that Python reports `x86_64`, asks for x86_64 wheels,
#   finds none newer than 2.2 ("No matching distribution found" for this course's `torch>=2.4`) and never
#   sees `mps`. If `platform.machine()` says `x86_64` on an M-series Mac, install an arm64 Python.
#
# `packaging.tags.sys_tags()` lists the tags this interpreter accepts, most specific first.

# %%
import platform
from packaging.tags import sys_tags

print("architecture", platform.machine())   # e.g. x86_64, arm64, aarch64
print("system      ", platform.system())    # Linux, Darwin (macOS) or Windows
print("wheel tags  ", [str(tag) for tag in list(sys_tags())[:3]])  # the ones pip prefers, best first

# %% [markdown]
# ## 2. Devices
#
# Every tensor lives on a **device**: `cpu`, `cuda` (an NVIDIA GPU; `cuda:0`, `cuda:1`, … when there are
# several) or `mps` (the GPU of an Apple-silicon Mac). An operation runs on the device of its inputs, and
# all its tensor inputs must be on the **same** device — mixing them is the single most common GPU error:
#
# ```
# RuntimeError: Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!
# ```
#
# `torch.device` is the object that names a device. Moving data is explicit, with `.to(device)`, and
# creating data directly on a device is better than creating it on the CPU and copying it over.

# %%
cpu = torch.device("cpu")
print(cpu, cpu.type, cpu.index)
gpu1 = torch.device("cuda:1")  # naming a device does not check that it exists
print(gpu1, gpu1.type, gpu1.index)

x = torch.ones(3)                   # on the CPU by default
print(x.device)
print("CUDA available:", torch.cuda.is_available(), "· GPUs:", torch.cuda.device_count())
print("MPS available: ", torch.backends.mps.is_available())

# %% [markdown]
# ### Why `torch.cuda.is_available()` can be `False` on a machine with a GPU
#
# - **A CPU-only build of torch.** `torch.version.cuda` is `None`. Reinstall with the command for your
#   platform from the PyTorch install selector.
# - **No driver, or a driver too old for the build.** `nvidia-smi` in a terminal should list the GPU and a
#   driver version; each CUDA build of torch needs a minimum driver version.
# - **The wrong environment.** The notebook's kernel may run another Python than the one you installed into.
#   Compare `import sys; sys.executable` with the `python` you ran `pip` with.
# - **The GPU is hidden.** An empty `CUDA_VISIBLE_DEVICES` variable (common on shared clusters) hides every GPU.
#
# None of this stops you from doing the whole course: every exercise runs on the CPU, and the checks also
# catch code that would break on a GPU (see below).
#
# ### The usual pattern
#
# Pick the device once, at the top of a script, and pass it around:
#
# ```python
# device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# model = model.to(device)
# x = x.to(device)
# ```

# %% [markdown]
# ## 3. How the checks work
#
# Each exercise has a check cell such as `check(pick_device)`. You pass the function itself (no parentheses):
# the check calls it many times with inputs it chooses. The report shows:
#
# - `✓` when every case passes, with the points earned;
# - `○ not attempted yet` while the stub still raises `NotImplementedError`;
# - `✗` with the failing cases: what was tried, what was expected, what your code returned, and the most
#   likely mistake.
#
# A failing check raises an `AssertionError`, so "Run All" stops at the first unfinished exercise. That is
# deliberate: later cells often build on earlier answers.
#
# Checks are strict on purpose. A result with shape `(4,)` where `(4, 1)` is expected fails, as does a
# float32 result where float64 goes in, a result left on the CPU while the input is on the GPU, or an
# input modified in place. These are exactly the bugs that are hardest to find later.
#
# **GPU bugs on a CPU machine.** When there is no GPU, the check also runs your code on PyTorch's `meta`
# device (tensors with a shape and dtype but no data). A tensor your code creates without
# `device=x.device` then shows up on the wrong device, and the check tells you, just as a GPU would.
#
# **Hints.** `hint(pick_device)` prints one hint; call it again for the next one. Try for a few minutes
# before asking: the struggle is where the learning happens.
#
# **Progress.** Every check records its latest result on your machine (in `~/.torchdojo/`, or where
# `TORCHDOJO_HOME` points). `progress()` lists every exercise of the course with its status and what to do
# next; `progress(grade=True)` instead grades the notebooks you saved, exactly as a class's grader would.
#
# **Your work is yours.** `bash dojo course` opens your own copies of the lessons, in the workspace folder
# (`workspace/`, or where `TORCHDOJO_WORKSPACE` points). When the course is updated (`git pull`), the next
# `bash dojo course`, or `python -m grader update`, brings the new lessons in and merges each updated lesson
# into your copy: your answers and the cells you added or changed stay, the rest is replaced, and a backup of
# the old notebook goes to `workspace/.backups/` first.

# %%
progress("00_setup")

# %% [markdown]
# ## 4. Finding help on your own
#
# Checks and hints cover the exercises; for everything else, PyTorch documents itself:
#
# - `dir(obj)` lists the names inside a module or object. Filter it to find what you half-remember.
# - `help(obj)` prints the docstring: the signature, each argument and usually a short example. In Jupyter,
#   `obj?` shows the same in a side panel and **Shift+Tab** inside a call's parentheses shows the signature.
# - The reference documentation at https://docs.pytorch.org/docs/stable/ has every function, with its
#   shapes and dtypes; the tutorials at https://docs.pytorch.org/tutorials/ walk through whole tasks.
# - The forum at https://discuss.pytorch.org is where to search for an error message first (someone has
#   usually met it), and where to ask: include the full error, the shapes, dtypes and devices involved, and
#   `torch.__version__`.

# %%
print([name for name in dir(torch.nn) if name.endswith("Loss")][:6])   # the loss modules, by name
print([name for name in dir(torch) if name.startswith("arg")])          # argmax, argmin, argsort, argwhere
help(torch.cuda.is_available)                                           # its signature and docstring

# %% [markdown]
# ## Exercise: `pick_device`
#
# Write `pick_device(prefer=None)` that returns a `torch.device`:
#
# - With `prefer` given (`"cpu"`, `"cuda"`, `"cuda:N"` or `"mps"`), that device if it is available.
# - Without a preference: `cuda` if available, else `mps` if available, else `cpu`.
# - Anything else — an unknown name, an unavailable device, a CUDA index beyond `torch.cuda.device_count()` —
#   raises `ValueError` with a message that lists the devices that *are* available, so the person who made the
#   typo can fix it at once.
#
# The check simulates machines you may not have (two GPUs, a Mac) by replacing `torch.cuda.is_available`,
# `torch.cuda.device_count` and `torch.backends.mps.is_available`, so use those functions to ask.

# %%
def pick_device(prefer: str | None = None) -> torch.device:
    """The preferred device if available, else the best available one (cuda, then mps, then cpu)."""
    ### BEGIN SOLUTION
    available = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())
                           if torch.cuda.is_available()]
    if torch.backends.mps.is_available():
        available.append("mps")
    if prefer is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if "mps" in available else "cpu")
    try:
        device = torch.device(prefer)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {prefer!r}; available: {', '.join(available)}") from None
    if device.type == "cuda" and torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count():
        return device
    if device.type in ("cpu", "mps") and device.type in available and device.index in (None, 0):
        return device
    raise ValueError(f"device {prefer!r} is not available here; available: {', '.join(available)}")
    ### END SOLUTION


# %%
check(pick_device)

# %% [markdown]
# From now on, pick the device once and create tensors directly on it. In your own scripts, `pick_device()`
# does exactly this job.

# %%
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
x = torch.arange(6, device=device).reshape(2, 3)
print(x, x.device)

# %% [markdown]
# ## Where next
#
# Lesson `01_tensors` starts with the object everything in PyTorch is made of. Keep this notebook's rule in
# mind: **know the shape, dtype and device of every tensor you make.**
