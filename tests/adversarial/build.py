"""Submissions made programmatically: the learner's notebook with the solutions' answers or hostile code."""
from __future__ import annotations

import copy
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load(kind: str, lesson: str) -> dict:
    return json.loads((ROOT / kind / f"{lesson}.ipynb").read_text())


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def solution_answers(lesson: str) -> dict[str, str]:
    """{exercise: the instructor notebook's answer cell}, markers stripped."""
    out = {}
    for cell in _load("solutions", lesson)["cells"]:
        if str(cell.get("id", "")).endswith("-answer"):
            lines = [ln for ln in _src(cell).splitlines() if "### BEGIN SOLUTION" not in ln
                     and "### END SOLUTION" not in ln]
            out[cell["id"].removesuffix("-answer")] = "\n".join(lines) + "\n"
    return out


def notebook(lesson: str, answers: dict[str, str] | None = None, correct: bool = True) -> dict:
    """The learner's notebook with every answer cell solved (correct=True) or left as the stub, then
    `answers` (exercise -> code) put in place of those exercises' answer cells."""
    nb = copy.deepcopy(_load("lessons", lesson))
    filled = dict(solution_answers(lesson)) if correct else {}
    filled.update(answers or {})
    for cell in nb["cells"]:
        name = str(cell.get("id", "")).removesuffix("-answer")
        if str(cell.get("id", "")).endswith("-answer") and name in filled:
            cell["source"] = filled[name]
    return nb


def write(path: Path, nb: dict | str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(nb, dict):
        path.write_text(json.dumps(nb, indent=1))
    elif isinstance(nb, bytes):
        path.write_bytes(nb)
    else:
        path.write_text(nb)
    return path
