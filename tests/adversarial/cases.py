"""Hostile submissions and what grading them must give.

Each case is a notebook built from lessons/NN_topic.ipynb with every answer solved (from solutions/) except
for the hostile part, and an expectation per exercise: FULL (full points, the hostile code elsewhere changed
nothing) or a message fragment (0 points, and the learner-facing message says why). Exercises not named
expect FULL, which is how "other items are unaffected" is asserted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from adversarial.build import ROOT, notebook, solution_answers

FULL = "FULL"
LESSON = "01_tensors"
HIDDEN_SEED = "918273645"  # distinctive, so a leak of it would be found in /proc
SOL = solution_answers


@dataclass
class Case:
    name: str
    make: Callable[[Path], dict | str | bytes]           # folder of the batch -> notebook (or raw file content)
    expect: dict[str, str] = field(default_factory=dict)  # exercise -> FULL or a fragment of its 0-point message
    status: str = "graded"
    note: str = ""                                        # a fragment expected in the submission's notes
    why: str = ""


def _sol(name: str) -> str:
    return SOL(LESSON)[name]


def _with(name: str, source: str) -> Callable[[Path], dict]:
    return lambda d: notebook(LESSON, {name: source})


WRONG_NORMALIZE = "def normalize(x, dim=-1, eps=1e-12):\n    return x / x.abs().sum(dim=dim, keepdim=True)\n"


def _edited_check_cells(d):
    nb = notebook(LESSON, {"normalize": WRONG_NORMALIZE})
    for cell in nb["cells"]:
        if str(cell.get("id", "")).endswith("-check"):
            cell["source"] = "print('✓ all cases passed')"
    return nb


def _deleted_check_cells(d):
    nb = notebook(LESSON)
    nb["cells"] = [c for c in nb["cells"] if not str(c.get("id", "")).endswith("-check")]
    return nb


def _duplicated_ids(d):
    nb = notebook(LESSON)
    cells = nb["cells"]
    i = next(k for k, c in enumerate(cells) if c.get("id") == "normalize-answer")
    wrong = dict(cells[i], source=WRONG_NORMALIZE)
    j = next(k for k, c in enumerate(cells) if c.get("id") == "gather_rows-check")
    cells.insert(i + 1, wrong)                  # the last copy of normalize-answer is wrong
    cells.insert(j + 1, dict(cells[j]))         # a duplicated check cell changes nothing
    return nb


def _cells_deleted(d):
    nb = notebook(LESSON)
    keep = {"broadcast_shape-answer", "one_hot-answer", "causal_mask-answer"}
    nb["cells"] = [c for c in nb["cells"] if c.get("id") in keep]  # imports and teaching cells gone too
    return nb


def _no_ids(d):
    nb = notebook(LESSON)
    for c in nb["cells"]:  # cells pasted into a fresh notebook: no ids, no nbgrader metadata
        c.pop("id", None)
        c["metadata"] = {}
    nb["nbformat_minor"] = 4
    return nb


def _steal_solution(d):
    # Reads the instructor notebook straight from the repository and runs its normalize.
    src = (f"import json\nfor c in json.load(open({str(ROOT / 'solutions' / (LESSON + '.ipynb'))!r}))['cells']:\n"
           "    if c.get('id') == 'normalize-answer':\n        exec(''.join(c['source']))\n")
    return notebook(LESSON, {"normalize": src})


def _steal_classmate(d):
    # Reads a classmate's (correct) notebook from the submissions folder and runs its normalize.
    src = (f"import json\nfor c in json.load(open({str(d / 'warnings.ipynb')!r}))['cells']:\n"
           "    if c.get('id') == 'normalize-answer':\n        exec(''.join(c['source']))\n")
    return notebook(LESSON, {"normalize": src})


def _hard_coded(d):
    """broadcast_shape answered from a table of the visible cases (recorded by running the public check)."""
    from grader.api import evaluate
    table = {}
    namespace = {}
    exec("import torch\n" + _sol("broadcast_shape"), namespace)
    real = namespace["broadcast_shape"]

    def record(a, b):
        key = (tuple(int(x) for x in a), tuple(int(x) for x in b))
        try:
            table[key] = real(a, b)
        except ValueError:
            table[key] = None
            raise
        return table[key]

    assert evaluate(record, name="broadcast_shape").passed
    src = (f"_TABLE = {table!r}\n"
           "def broadcast_shape(a, b):\n"
           "    key = (tuple(int(x) for x in a), tuple(int(x) for x in b))\n"
           "    if key not in _TABLE:\n        return tuple(a)\n"
           "    if _TABLE[key] is None:\n        raise ValueError(f'{a} and {b} do not broadcast')\n"
           "    return _TABLE[key]\n")
    return notebook(LESSON, {"broadcast_shape": src})


SEED_HUNT = f"""
import glob, os
def _seed_visible():
    if any({HIDDEN_SEED!r} in v for v in os.environ.values()):
        return True
    for path in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):
        try:
            if {HIDDEN_SEED!r}.encode() in open(path, 'rb').read():
                return True
        except OSError:
            pass
    return False
_LEAK = _seed_visible()
""" + "{sol}" + """
_real = broadcast_shape
def broadcast_shape(a, b):
    if _LEAK:
        return (-1,)  # the seed leaked: this exercise then fails, and the test says so
    return _real(a, b)
"""

CASES = [
    Case("edited_check_cells", _edited_check_cells, {"normalize": "wrong values"},
         why="check cells replaced with a print: the source's checks still run"),
    Case("deleted_check_cells", _deleted_check_cells, {}, why="no check cells at all: full marks all the same"),
    Case("duplicated_ids", _duplicated_ids, {"normalize": "wrong values"}, note="2 cells carry the id",
         why="two cells with the id normalize-answer: the last one (as Run All leaves it) is graded"),
    Case("cells_deleted", _cells_deleted,
         {"pairwise_sq_dists": "not attempted", "batched_matmul": "not attempted",
          "gather_rows": "not attempted", "normalize": "not attempted"},
         note="no answer cell", why="only three answer cells left, imports gone: those three still pass"),
    Case("no_cell_ids", _no_ids, {}, why="no ids or metadata: answers found by the name they define"),
    Case("patched_allclose", _with("normalize", "import torch, torch.testing\n"
         "torch.allclose = lambda *a, **k: True\ntorch.testing.assert_close = lambda *a, **k: None\n"
         "torch.isclose = lambda a, b, *r, **k: torch.ones(torch.broadcast_shapes(a.shape, b.shape), dtype=torch.bool)\n"
         + WRONG_NORMALIZE), {"normalize": "wrong values"}),
    Case("patched_grader", _with("normalize", "import grader, grader.compare, grader.runner, grader.report\n"
         "grader.compare.expect_tensor = lambda *a, **k: None\n"
         "grader.runner.expect_tensor = lambda *a, **k: None\n"
         "grader.runner.Tester.compare = lambda *a, **k: None\n"
         "grader.report.Report.passed = property(lambda self: True)\n"
         "grader.report.Report.points = property(lambda self: self.max_points)\n" + WRONG_NORMALIZE),
         {"normalize": "wrong values"}),
    Case("always_equal", _with("normalize", "class AlwaysEqual:\n"
         "    def __eq__(self, other): return True\n    def __bool__(self): return True\n"
         "    def __getattr__(self, name): return self\n    def __call__(self, *a, **k): return self\n"
         "def normalize(x, dim=-1, eps=1e-12):\n    return AlwaysEqual()\n"),
         {"normalize": "should be a torch.Tensor, got AlwaysEqual"}),
    Case("tensor_subclass", _with("normalize", "import torch\nclass Liar(torch.Tensor):\n"
         "    @classmethod\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
         "        if getattr(func, '__name__', '') in ('allclose', 'equal', '__eq__', 'isclose'):\n"
         "            return True\n        return super().__torch_function__(func, types, args, kwargs or {})\n"
         "def normalize(x, dim=-1, eps=1e-12):\n    return torch.zeros_like(x).as_subclass(Liar)\n"),
         {"normalize": "subclass Liar"}),
    Case("torch_function_mode", _with("normalize", "import torch\nfrom torch.overrides import TorchFunctionMode\n"
         "class Agree(TorchFunctionMode):\n"
         "    def __torch_function__(self, func, types, args=(), kwargs=None):\n"
         "        if getattr(func, '__name__', '') in ('allclose', 'equal'):\n            return True\n"
         "        return func(*args, **(kwargs or {}))\n"
         "Agree().__enter__()\n" + WRONG_NORMALIZE), {"normalize": "wrong values"}),
    Case("prints_all_passed", _with("normalize", "print('✓ normalize: all 9 cases passed · 2/2 points')\n"
         "def normalize(x, dim=-1, eps=1e-12):\n    print('✓ all cases passed')\n    return x\n"),
         {"normalize": "wrong values"}),
    Case("sys_exit_in_function", _with("normalize", "import sys\n"
         "def normalize(x, dim=-1, eps=1e-12):\n    sys.exit(0)\n"), {"normalize": "SystemExit"}),
    Case("sys_exit_top_level", _with("normalize", "import sys\nsys.exit('bye')\n" + _sol("normalize")),
         {}, note="SystemExit", why="it costs only its own statement: the definition after it is graded"),
    Case("keyboard_interrupt", _with("one_hot", "def one_hot(labels, num_classes=-1):\n"
         "    raise KeyboardInterrupt\n"), {"one_hot": "KeyboardInterrupt"}),
    Case("os_exit_in_function", _with("gather_rows", "import os\n"
         "def gather_rows(x, idx):\n    os._exit(3)\n"), {"gather_rows": "exit status 3"},
         why="a middle exercise ends the process: the later ones get a fresh sandbox"),
    Case("os_exit_top_level", _with("batched_matmul", "import os\nos._exit(0)\n" + _sol("batched_matmul")),
         {"batched_matmul": "skipped"}, why="the answer cell kills the sandbox as it runs: that cell is skipped"),
    Case("segfault", _with("pairwise_sq_dists", "import ctypes\n"
         "def pairwise_sq_dists(x, y):\n    return ctypes.string_at(0)\n"), {"pairwise_sq_dists": "SIGSEGV"}),
    Case("ignores_sigint_loops", _with("one_hot", "import signal\n"
         "def one_hot(labels, num_classes=-1):\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
         "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    while True:\n        pass\n"),
         {"one_hot": "did not finish"}),
    Case("memory_bomb", _with("causal_mask", "import torch\ndef causal_mask(n, device=None):\n"
         "    return torch.ones(8 * 2**30, dtype=torch.uint8)[:n * n].view(n, n).bool()\n"),
         {"causal_mask": "allocate"}, why="8 GiB at once: refused by RLIMIT_AS"),
    Case("memory_hoard", _with("gather_rows", "def gather_rows(x, idx):\n    hoard = []\n"
         "    while True:\n        hoard.append(bytearray(2**28))\n"), {"gather_rows": "MemoryError|did not finish"}),
    Case("fork_bomb", _with("normalize", "import os\ndef normalize(x, dim=-1, eps=1e-12):\n"
         "    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"),
         {"normalize": ""}, why="processes capped by RLIMIT_NPROC, all killed at the deadline"),
    Case("background_process", _with("causal_mask", "import subprocess, os\n"
         "subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
         "if os.fork() == 0:\n    os.setsid()\n    import time\n    while True:\n        time.sleep(0.05)\n"
         + _sol("causal_mask")), {}, why="left running: killed after grading, the answer still counts"),
    Case("hard_coded_visible_cases", _hard_coded, {"broadcast_shape": "hidden"},
         why="passes every visible case, fails the hidden round"),
    Case("hunts_hidden_seed", lambda d: notebook(LESSON, {"broadcast_shape": SEED_HUNT.replace(
         "{sol}", _sol("broadcast_shape"))}), {}, why="the hidden seed is nowhere the sandbox can read"),
    Case("reads_solutions", _steal_solution, {"normalize": "not defined"},
         why="solutions/ is hidden from the sandbox"),
    Case("reads_classmate", _steal_classmate, {"normalize": "not defined"},
         why="the submissions folder is hidden from the sandbox"),
    Case("warnings", lambda d: notebook(LESSON, {n: "import warnings\nwarnings.warn('top-level', UserWarning)\n"
         + s.replace('"""\n', '"""\n    warnings.warn("deprecated", DeprecationWarning)\n', 1)
         for n, s in SOL(LESSON).items()}), {}, why="a correct submission with warnings: full marks"),
    Case("invalid_json", lambda d: '{"cells": [{"cell_type": "code", "source": "def normalize(', status="unreadable",
         expect={n: "not graded" for n in SOL(LESSON)}, note="not valid JSON"),
    Case("empty_file", lambda d: b"", status="unreadable", expect={n: "not graded" for n in SOL(LESSON)},
         note="empty"),
    Case("syntax_error", _with("gather_rows", "def gather_rows(x, idx)\n    return x\n"),
         {"gather_rows": "SyntaxError"}),
]


def write_all(folder: Path) -> dict[str, Case]:
    """Every case as folder/<name>.ipynb."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for case in CASES:
        content = case.make(folder)
        path = folder / f"{case.name}.ipynb"
        if isinstance(content, dict):
            path.write_text(json.dumps(content, indent=1))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        out[case.name] = case
    return out
