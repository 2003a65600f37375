"""The class report: which mistakes a class made, read from the batch grader's per-student JSON.

`python -m grader report GRADES_DIR --out report.html`, or in a notebook `class_report("out/")`.

GRADES_DIR is the `--out` folder of one `python -m grader grade` run, or a folder of such folders (one per lesson
batch, named as you like): every `<student>.json` directly in it or in its subfolders is read, and the records are
grouped by the lesson they name. Where the same student and lesson appear twice (a regrade into a new folder), the
newer file wins.

Per lesson it shows a score histogram, each exercise's pass rate and how many did not attempt it, the most common
mistakes (counted once per student, grouped by the case's mistake code, with one public case's message as an
example), and the students who are stuck: not passing one of the lesson's first exercises (the first third,
at least one). Hidden cases are counted by their code only; no text of theirs is shown.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from grader.report import mistake_of

TOP_MISTAKES = 5
HIDDEN_ONLY = "seen only on hidden inputs (their details are not shown)"


class ReportError(Exception):
    """The grades folder cannot be read; the message is one line that says why."""


@dataclass
class Mistake:
    code: str
    label: str  # the diagnosis with values masked ("" when seen only on hidden cases)
    students: int  # how many students made it (each counted once per exercise)
    example: str  # one public case's message, first lines, as one student saw it


@dataclass
class ExerciseSummary:
    name: str
    passed: int = 0
    failed: int = 0
    not_attempted: int = 0  # includes submissions that could not be graded (missing, unreadable)
    mistakes: list[Mistake] = field(default_factory=list)

    @property
    def students(self) -> int:
        return self.passed + self.failed + self.not_attempted

    @property
    def pass_rate(self) -> float:
        return self.passed / self.students if self.students else 0.0


@dataclass
class Stuck:
    student: str
    score: int
    exercise: str  # the first early exercise not passed
    why: str  # "not attempted", or the diagnosis of its failure


@dataclass
class LessonSummary:
    name: str
    max_score: int
    scores: dict[str, int]  # student -> score
    exercises: list[ExerciseSummary]
    stuck: list[Stuck]
    not_graded: list[str]  # students whose submission could not be graded (status in grades.csv says why)


def load_records(folder: str | Path) -> list[dict]:
    """Every per-student record in `folder` and its direct subfolders; the newest where one repeats."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder")
    newest: dict[tuple[str, str], tuple[float, dict]] = {}
    for path in sorted([*folder.glob("*.json"), *folder.glob("*/*.json")]):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ReportError(f"{path}: cannot be read ({e})") from None
        except json.JSONDecodeError as e:
            raise ReportError(f"{path}: corrupt JSON ({e.msg} at line {e.lineno}) — grade that batch again") from None
        if not (isinstance(record, dict) and {"student", "lesson", "exercises"} <= record.keys()):
            continue  # not a grading result (say, a config file kept next to them)
        if not isinstance(record["exercises"], list):
            raise ReportError(f"{path}: not a grading result of `python -m grader grade` (no exercise list)")
        key, mtime = (record["lesson"], record["student"]), path.stat().st_mtime
        if key not in newest or mtime >= newest[key][0]:
            newest[key] = (mtime, record)
    if not newest:
        raise ReportError(f"{folder}: no grading results in it or its subfolders (the <student>.json files that "
                          "`python -m grader grade --out FOLDER` writes)")
    return [record for _, record in newest.values()]


def case_mistake(case: dict) -> tuple[str, str]:
    """(code, label) of a failed case of a record; a hidden case's label is always ""."""
    mistake = case.get("mistake")
    if mistake:
        return mistake["code"], "" if case["hidden"] else mistake["label"]
    if case["hidden"]:  # no code: the hidden round stopped (a timeout, a crash), or an older grader wrote it
        return "hidden-round-failed", ""
    return mistake_of(case["message"])


def exercise_mistakes(entry: dict) -> dict[str, tuple[str, str]]:
    """{code: (label, example)} of one failed exercise of one student ("" example for hidden cases)."""
    found: dict[str, tuple[str, str]] = {}
    for case in entry["cases"]:
        if case["passed"] or case["skipped"]:
            continue
        code, label = case_mistake(case)
        example = "" if case["hidden"] else _example(case["message"])
        if code not in found or (example and not found[code][1]):
            found[code] = (label, example)
    if not found:  # no case failed: the check stopped before any ("✗ name: why · 0/2 points")
        head = entry["message"].splitlines()[0] if entry["message"] else ""
        why = head.removeprefix(f"✗ {entry['name']}: ").rpartition(" · ")[0] or head
        code, label = mistake_of(why)
        found[code] = (label, why)
    return found


def _example(message: str) -> str:
    """The message's first line and its '→' diagnosis, as the learner read them (no values line)."""
    lines = message.splitlines() or [""]
    return "\n".join([lines[0]] + [ln for ln in lines[1:] if ln.startswith("→")][:1])


def summarize(records: list[dict]) -> list[LessonSummary]:
    by_lesson: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_lesson[r["lesson"]].append(r)
    return [_lesson(name, sorted(rs, key=lambda r: r["student"])) for name, rs in sorted(by_lesson.items())]


def _lesson(name: str, records: list[dict]) -> LessonSummary:
    order = max((r["exercises"] for r in records), key=len)  # the batch writes them in the lesson's order
    exercises = {ex["name"]: ExerciseSummary(ex["name"]) for ex in order}
    counts: dict[str, Counter] = {n: Counter() for n in exercises}
    labels: dict[str, dict[str, Counter]] = {n: defaultdict(Counter) for n in exercises}
    examples: dict[str, dict[str, str]] = {n: {} for n in exercises}
    early = [ex["name"] for ex in order[:max(1, len(order) // 3)]]
    stuck, not_graded = [], []
    for r in records:
        graded = r["status"] == "graded"
        if not graded:
            not_graded.append(r["student"])
        entries = {ex["name"]: ex for ex in r["exercises"]}
        first_problem = None
        for ex_name, summary in exercises.items():
            entry = entries.get(ex_name)
            status = entry["status"] if graded and entry else "not_attempted"
            if status == "passed":
                summary.passed += 1
                continue
            why = "not attempted" if graded else f"not graded ({r['status']})"
            if status == "not_attempted":
                summary.not_attempted += 1
            else:
                summary.failed += 1
                found = exercise_mistakes(entry)
                for code, (label, example) in found.items():
                    counts[ex_name][code] += 1
                    if label:
                        labels[ex_name][code][label] += 1
                    if example and code not in examples[ex_name]:
                        examples[ex_name][code] = example
                why = next((label for label, _ in found.values() if label), HIDDEN_ONLY)
            if first_problem is None and ex_name in early:
                first_problem = (ex_name, why)
        if first_problem:
            stuck.append(Stuck(r["student"], r["score"], *first_problem))
    for ex_name, summary in exercises.items():
        summary.mistakes = [
            Mistake(code, labels[ex_name][code].most_common(1)[0][0] if labels[ex_name][code] else "", n,
                    examples[ex_name].get(code, ""))
            for code, n in sorted(counts[ex_name].items(), key=lambda kv: (-kv[1], kv[0]))]
    max_score = max(r["max_score"] for r in records)
    stuck.sort(key=lambda s: (s.score, s.student))
    return LessonSummary(name, max_score, {r["student"]: r["score"] for r in records}, list(exercises.values()),
                         stuck, not_graded)


class ClassReport:
    """What a class got right and wrong; shows itself in a notebook, `save(path)` writes one HTML file."""

    def __init__(self, lessons: list[LessonSummary], source: str = ""):
        self.lessons, self.source = lessons, source

    def lesson(self, name: str) -> LessonSummary:
        return next(lesson for lesson in self.lessons if lesson.name == name)

    def html(self) -> str:
        """The whole report as one self-contained HTML page (figures embedded as PNG)."""
        body = [f"<h1>Class report</h1><p class='meta'>{_e(self.source)} · "
                f"{len(self.lessons)} lesson{'s' * (len(self.lessons) != 1)} · "
                f"{len({s for lesson in self.lessons for s in lesson.scores})} students</p>"]
        body += [_lesson_html(lesson) for lesson in self.lessons]
        return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>torchdojo class report</title>"
                f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")

    def _repr_html_(self) -> str:
        lessons = "".join(map(_lesson_html, self.lessons))
        return f"<div class='torchdojo-class-report'><style>{_CSS}</style>{lessons}</div>"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html(), encoding="utf-8")
        return path


def class_report(folder: str | Path) -> ClassReport:
    """The class report of a grades folder (see this module's docstring); raises ReportError on bad input."""
    return ClassReport(summarize(load_records(folder)), str(folder))


# --- HTML ----------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.n{text-align:right}.meta{color:#666}code{font-size:90%;white-space:nowrap}
.figs img{max-width:48%;margin-right:1%}pre{margin:0;white-space:pre-wrap;font-size:85%}
"""


def _e(text) -> str:
    return html.escape(str(text))


def _lesson_html(lesson: LessonSummary) -> str:
    n = len(lesson.scores)
    mean = sum(lesson.scores.values()) / n if n else 0
    parts = [f"<section class='lesson' id='{_e(lesson.name)}'><h2>{_e(lesson.name)}</h2>",
             f"<p class='meta'>{n} students · mean score {mean:.1f}/{lesson.max_score}"
             + (f" · not graded: {_e(', '.join(lesson.not_graded))}" if lesson.not_graded else "") + "</p>",
             "<div class='figs'>", _img(_histogram(lesson), f"score histogram of {lesson.name}"),
             _img(_pass_rates(lesson), f"pass rates of {lesson.name}"), "</div>",
             "<table class='exercises'><tr><th>exercise</th><th>pass rate</th><th>passed</th><th>failed</th>"
             "<th>not attempted</th></tr>"]
    for ex in lesson.exercises:
        parts.append(f"<tr><td>{_e(ex.name)}</td><td class='n'>{ex.pass_rate:.0%}</td><td class='n'>{ex.passed}</td>"
                     f"<td class='n'>{ex.failed}</td><td class='n'>{ex.not_attempted}</td></tr>")
    parts.append("</table><h3>Most common mistakes</h3>")
    for ex in lesson.exercises:
        if not ex.mistakes:
            continue
        parts.append(f"<h4>{_e(ex.name)}</h4><table class='mistakes' data-exercise='{_e(ex.name)}'><tr><th>students"
                     "</th><th>diagnosis</th><th>code</th><th>example</th></tr>")
        for m in ex.mistakes[:TOP_MISTAKES]:
            parts.append(f"<tr><td class='n'>{m.students}</td><td>{_e(m.label or HIDDEN_ONLY)}</td>"
                         f"<td><code>{_e(m.code)}</code></td><td><pre>{_e(m.example)}</pre></td></tr>")
        if len(ex.mistakes) > TOP_MISTAKES:
            rest = sum(m.students for m in ex.mistakes[TOP_MISTAKES:])
            parts.append(f"<tr><td class='n'>{rest}</td><td colspan='3'>{len(ex.mistakes) - TOP_MISTAKES} other "
                         "diagnoses</td></tr>")
        parts.append("</table>")
    parts.append("<h3>Stuck students</h3>")
    if lesson.stuck:
        parts.append("<table class='stuck'><tr><th>student</th><th>score</th><th>stuck at</th><th>why</th></tr>")
        parts += [f"<tr><td>{_e(s.student)}</td><td class='n'>{s.score}/{lesson.max_score}</td><td>{_e(s.exercise)}"
                  f"</td><td>{_e(s.why)}</td></tr>" for s in lesson.stuck]
        parts.append("</table>")
    else:
        parts.append("<p>Nobody: every student passed the first exercises.</p>")
    return "".join(parts) + "</section>"


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _figure():
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    return Figure(figsize=(6, 3.4), dpi=100)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _histogram(lesson: LessonSummary) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    top = max(lesson.max_score, 1)
    bins = [b - 0.5 for b in range(top + 2)] if top <= 30 else min(30, math.ceil(top / 2))
    ax.hist(list(lesson.scores.values()), bins=bins, color="#4c72b0", edgecolor="white")
    ax.set(title=f"{lesson.name}: scores", xlabel=f"score (of {lesson.max_score})", ylabel="students")
    ax.yaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def _pass_rates(lesson: LessonSummary) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    names = [ex.name for ex in lesson.exercises][::-1]  # first exercise on top
    rows = lesson.exercises[::-1]
    left = [0] * len(rows)
    for label, color, values in [("passed", "#55a868", [ex.passed for ex in rows]),
                                 ("failed", "#c44e52", [ex.failed for ex in rows]),
                                 ("not attempted", "#bbbbbb", [ex.not_attempted for ex in rows])]:
        ax.barh(names, values, left=left, color=color, label=label)
        left = [a + b for a, b in zip(left, values)]
    ax.set(title=f"{lesson.name}: exercises", xlabel="students")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize="small", frameon=False)
    return _png(fig)


def report_command(args) -> int:
    """`python -m grader report GRADES_DIR --out report.html`: 0 when written, 2 on bad input (one line why)."""
    try:
        report = class_report(args.grades_dir)
    except ReportError as e:
        print(f"python -m grader report: error: {e}", file=sys.stderr)
        return 2
    path = report.save(args.out)
    for lesson in report.lessons:
        worst = min(lesson.exercises, key=lambda ex: ex.pass_rate)
        print(f"{lesson.name}: {len(lesson.scores)} students, lowest pass rate {worst.name} "
              f"({worst.pass_rate:.0%}), {len(lesson.stuck)} stuck")
    print(f"wrote {path}")
    return 0
