"""Print each solution notebook's run time and each check's median latency on this machine.

    python benchmarks/checks.py [NN_topic ...]

Each solution notebook runs top to bottom in a real Jupyter kernel (timed); then, in the same kernel, every
check of that lesson is timed on the lesson's own solution, REPEATS times, and the median is printed.
Budgets (DESIGN.md): a check < 0.3 s median (training exercises excepted), a notebook < 90 s.
"""
import json
import statistics
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 5

TIMING_CELL = """
import json as _json, time as _time
from grader import evaluate as _evaluate
from grader.registry import exercises as _exercises
_times = {}
for _name, _ex in _exercises().items():
    if _ex.lesson != LESSON:
        continue
    _runs = []
    for _ in range(REPEATS if _ex.budget_s < 5 else 1):  # a training check runs once
        _t = _time.perf_counter()
        _report = _evaluate(globals()[_name], name=_name)
        _runs.append(_time.perf_counter() - _t)
    _times[_name] = {"runs": _runs, "passed": _report.passed, "budget": _ex.budget_s}
print("TIMES" + _json.dumps(_times))
"""


def bench(lesson: str) -> tuple[float, dict]:
    nb = nbformat.read(ROOT / "solutions" / f"{lesson}.ipynb", as_version=4)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "solutions")}})
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
        notebook_s = time.perf_counter() - start
        timing = nbformat.v4.new_code_cell(f"LESSON, REPEATS = {lesson!r}, {REPEATS}\n{TIMING_CELL}")
        nb.cells.append(timing)
        client.execute_cell(timing, len(nb.cells) - 1)
    out = "".join(o.get("text", "") for o in timing.outputs if o.output_type == "stream")
    return notebook_s, json.loads(out.split("TIMES", 1)[1])


def main(lessons: list[str]) -> None:
    lessons = lessons or sorted(p.stem for p in (ROOT / "solutions").glob("[0-9][0-9]_*.py"))
    medians, total = [], 0.0
    print(f"{'lesson / exercise':<40} {'median s':>9} {'max s':>7} {'budget':>7}  ok")
    for lesson in lessons:
        notebook_s, times = bench(lesson)
        total += notebook_s
        print(f"{lesson:<40} notebook {notebook_s:6.1f} s")
        for name, t in times.items():
            median = statistics.median(t["runs"])
            if t["budget"] < 5:
                medians.append(median)
            print(f"  {name:<38} {median:9.3f} {max(t['runs']):7.3f} {t['budget']:7.1f}  "
                  f"{'yes' if t['passed'] else 'NO'}{'' if median <= t['budget'] else '  OVER BUDGET'}")
    print(f"\n{len(medians)} non-training checks: median of medians {statistics.median(medians):.3f} s, "
          f"slowest {max(medians):.3f} s; notebooks {total:.1f} s in all")


if __name__ == "__main__":
    main(sys.argv[1:])
