"""What a check returns and how it reads to a learner."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

MAX_SHOWN_FAILURES = 3


@dataclass
class CaseResult:
    name: str
    passed: bool
    message: str = ""
    skipped: bool = False  # inconclusive (e.g. an op with no meta kernel): neither passed nor failed
    hidden: bool = False
    mistake: str = ""  # a failed case's diagnosis as a stable code (see mistake_of); "" when it passed
    label: str = ""  # that diagnosis in words, values masked; "" for a hidden case (no text of it leaves)


# Diagnoses are data: a failed case's message, with what varies between learners (numbers, shapes, indices,
# quoted names, the learner's function and line) masked, is its diagnosis. Two learners who made the same
# mistake get the same label, and so the same code, whatever their inputs were.
_MASKS = [
    (re.compile(r"(raised \w+) in \S+ \(line \d+\)"), r"\1"),  # where in the learner's own code
    (re.compile(r"`[^`]*`"), "`<name>`"),
    (re.compile(r"(?<!\w)'[^']*'(?!\w)|\"[^\"]*\""), "'<text>'"),  # not the apostrophe of "input's"
    (re.compile(r"tensor\((?:[^()]|\([^()]*\))*\)"), "<tensor>"),
    (re.compile(r"torch\.Size\(\[[^\]]*\]\)"), "<shape>"),
    (re.compile(r"(?<![\w)\]])\((?:\s*-?\d+\s*,?)*\)"), "<shape>"),  # (4, 1), (3,), () but not f() or f(1)
    (re.compile(r"\[(?:\s*-?[\d.e+-]+\s*,?)+\]"), "<list>"),
    (re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w])"), "<n>"),
]


def mistake_of(message: str, code: str = "") -> tuple[str, str]:
    """(code, label) of a failure message: the label is its first line and its '→' diagnosis line, if any, with
    values masked; the code is `code` when the check named the mistake, else one made from the label."""
    lines = message.splitlines() or [""]
    because = next((ln for ln in lines[1:] if ln.startswith("→")), "")
    label = " ".join(f"{lines[0]} {because}".split())
    for pattern, placeholder in _MASKS:
        label = pattern.sub(placeholder, label)
    return code or "m-" + hashlib.sha1(label.encode()).hexdigest()[:8], label


@dataclass
class Report:
    name: str
    status: str  # "passed" | "failed" | "not_attempted"
    max_points: int
    cases: list[CaseResult] = field(default_factory=list)
    error: str = ""  # why the whole exercise failed, when no case could run (a crash building the object)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def points(self) -> int:
        return self.max_points if self.passed else 0

    def text(self) -> str:
        """The short readable report shown under a check cell."""
        ran = [c for c in self.cases if not c.skipped]
        failed = [c for c in ran if not c.passed]
        score = f"{self.points}/{self.max_points} points"
        if self.status == "not_attempted":
            return (f"○ {self.name}: not attempted yet · {score}\n"
                    "  Replace the `raise NotImplementedError` in its cell with your code, run that cell, "
                    "then run this check again.")
        if self.passed:
            return f"✓ {self.name}: {'all ' if len(ran) > 1 else ''}{_cases(len(ran), 'case')} passed · {score}"
        error = self.error.splitlines() or [""]  # its first line heads the report, any advice goes below
        problems = ([f"{len(failed)} of {_cases(len(ran), 'case')} failed"] if failed else []) + \
                   ([f"the check stopped: {error[0]}" if ran else error[0]] if self.error else [])
        lines = [f"✗ {self.name}: {'; '.join(problems)} · {score}"] + [f"  {line}" for line in error[1:]]
        shown = ""
        for case in failed[:MAX_SHOWN_FAILURES]:
            lines.append(f"  ✗ {case.name}")
            same = case.message == shown and len(case.message) > 40
            lines.extend(["      (the same)"] if same else [f"      {line}" for line in case.message.splitlines()])
            shown = case.message
        if len(failed) > MAX_SHOWN_FAILURES:
            lines.append(f"  … and {_cases(len(failed) - MAX_SHOWN_FAILURES, 'more failing case')}")
        if len(ran) > len(failed):
            lines.append(f"  ✓ {_cases(len(ran) - len(failed), 'other case')} passed")
        lines.append(f'  Stuck? hint("{self.name}") shows one hint at a time.')
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


def _cases(n: int, noun: str) -> str:
    """'1 other case', '3 other cases'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
