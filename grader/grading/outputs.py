"""What instructors use: per-student JSON and feedback, the CSV gradebook, Gradescope's results.json.

Everything here is written atomically (a temporary file, then os.replace), so an interrupted batch never
leaves a half-written result, and it is built only from the learner-facing messages: hidden cases were
redacted by the judge before they got here.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from grader.report import Report


_UMASK = os.umask(0o022)  # read it (the only way is to set it), then put it back
os.umask(_UMASK)


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` all at once, readable like any file the user creates (umask applies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fchmod(f.fileno(), 0o666 & ~_UMASK)
        os.fsync(f.fileno())
    os.replace(f.name, path)


def exercise_entry(report: Report) -> dict:
    return {
        "name": report.name, "points": report.points, "max_points": report.max_points, "status": report.status,
        "message": report.text(),
        "cases": [{"name": c.name, "passed": c.passed, "skipped": c.skipped, "hidden": c.hidden,
                   "message": c.message, "mistake": {"code": c.mistake, "label": c.label} if c.mistake else None}
                  for c in report.cases],
    }


def result_record(student: str, lesson: str, source: str, key: str, status: str, reports: list[Report],
                  notes: list[str], max_score: int, seconds: float) -> dict:
    return {
        "student": student, "lesson": lesson, "source": source, "key": key, "status": status,
        "score": sum(r.points for r in reports), "max_score": max_score,
        "exercises": [exercise_entry(r) for r in reports], "notes": notes, "seconds": round(seconds, 3),
    }


def ungraded_record(student: str, lesson, source: str, status: str, why: str, exercises: list,
                    key: str = "") -> dict:
    """The record of a submission with nothing to grade (`missing`, `unreadable`, `no_cells`) or that the grader
    failed on (`error`: regraded on the next run): 0 points, and why, said once."""
    reports = [Report(ex.name, "failed", ex.points) for ex in exercises]
    record = result_record(student, lesson.name, source, key, status, reports, [why],
                           sum(ex.points for ex in exercises), 0.0)
    for ex in record["exercises"]:
        ex["message"] = f"○ {ex['name']}: not graded ({status}) · 0/{ex['max_points']} points"
    return record


def feedback_text(record: dict) -> str:
    """The readable feedback file: score, then each exercise's report, then notes. A submission with nothing
    to grade gets the reason once, not once per exercise."""
    lines = [f"torchdojo · {record['lesson']} · {record['student']}",
             f"Score: {record['score']}/{record['max_score']}", ""]
    if record["status"] != "graded":
        lines += [f"Status: {record['status']} — {record['notes'][0]}", ""]
        lines += [ex["message"] for ex in record["exercises"]]
        return "\n".join(lines).rstrip() + "\n"
    for ex in record["exercises"]:
        lines += [ex["message"], ""]
    if record["notes"]:
        lines.append("Notes:")
        lines += [f"  - {n}" for n in record["notes"]]
        lines.append("")
    if any(c["hidden"] for ex in record["exercises"] for c in ex["cases"]):
        lines.append("Hidden cases use inputs drawn from the instructor's seed; their details are not shown.")
    return "\n".join(lines).rstrip() + "\n"


def gradescope(record: dict) -> dict:
    """Gradescope's autograder results.json for one submission."""
    tests = [{"name": ex["name"], "score": ex["points"], "max_score": ex["max_points"],
              "status": "passed" if ex["status"] == "passed" else "failed", "output": ex["message"],
              "output_format": "text", "visibility": "visible"} for ex in record["exercises"]]
    # output_format "text": Gradescope would otherwise read the feedback as HTML and drop a message's <...>
    return {"score": record["score"], "output": feedback_text(record), "output_format": "text",
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


def write_gradescope(out: Path, record: dict) -> None:
    atomic_write(out / "gradescope" / record["student"] / "results.json", json.dumps(gradescope(record), indent=1))


def write_student(out: Path, record: dict, with_gradescope: bool) -> None:
    atomic_write(out / "feedback" / f"{record['student']}.txt", feedback_text(record))
    if with_gradescope or (out / "gradescope" / record["student"] / "results.json").exists():  # none left stale
        write_gradescope(out, record)
    atomic_write(out / f"{record['student']}.json", json.dumps(record, indent=1, sort_keys=True))  # last: done


def write_gradebook(out: Path, records: list[dict], exercise_names: list[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student", "lesson", "score", "max_score", "status"] + exercise_names + ["source"])
    for r in sorted(records, key=lambda r: r["student"]):
        points = {ex["name"]: ex["points"] for ex in r["exercises"]}
        w.writerow([r["student"], r["lesson"], r["score"], r["max_score"], r["status"]]
                   + [points.get(n, 0) for n in exercise_names] + [r["source"]])
    atomic_write(out / "grades.csv", buf.getvalue())
