"""The course as an nbgrader course directory: source/<lesson>/<lesson>.ipynb plus nbgrader_config.py.

solutions/NN_topic.ipynb already carries nbgrader's markers and cell metadata (see grader.build), so nbgrader's
own generate_assignment makes exactly the learner's notebook from it. The config sets a generous execution
timeout and adds RedactHiddenCases to generate_feedback, so feedback never shows hidden cases' names.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from nbconvert.preprocessors import Preprocessor

from grader.build import ROOT, sources

CONFIG = '''"""nbgrader configuration for the torchdojo course (written by `python -m grader nbgrader-course`)."""
from grader.grading.nbgrader_course import RedactHiddenCases

c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "torchdojo"
c.CourseDirectory.assignment_id = ""
# A lesson's checks run well under a minute; training lessons take longer on a slow CPU.
c.ExecutePreprocessor.timeout = {timeout}
c.Execute.timeout = {timeout}
c.ExecutePreprocessor.interrupt_on_timeout = True
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
# Set TORCHDOJO_HIDDEN_SEED in the environment of `nbgrader autograde` to add the hidden round; feedback
# then shows hidden cases only as "hidden case" (no inputs, no values).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    RedactHiddenCases,
]
'''

_HIDDEN_LINE = re.compile(r"^(\s*)([✗✓]) hidden case: .*$")


class RedactHiddenCases(Preprocessor):
    """In graded cells' outputs, a hidden case becomes "✗ hidden case": its name and message are dropped."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream":
                    out["text"] = redact(out.get("text", ""))
                elif out.get("output_type") == "error":
                    out["traceback"] = [redact(t) for t in out.get("traceback", [])]
                    out["evalue"] = redact(out.get("evalue", ""))
        return cell, resources


def redact(text: str) -> str:
    """Drop hidden cases' names and their indented message lines from a report."""
    lines, out, skipping = text.split("\n"), [], None
    for line in lines:
        m = _HIDDEN_LINE.match(line)
        if m:
            out.append(f"{m.group(1)}{m.group(2)} hidden case")
            skipping = len(m.group(1))
            continue
        if skipping is not None and line.strip() and len(line) - len(line.lstrip()) > skipping:
            continue
        skipping = None
        out.append(line)
    return "\n".join(out)


def export(out: Path, lessons: list[str] | None = None, timeout: int = 600) -> list[Path]:
    """Write the course directory; returns the files written."""
    out = Path(out)
    names = lessons or [src.stem for src in sources()]
    written = []
    for name in names:
        src = ROOT / "solutions" / f"{name}.ipynb"
        if not src.exists():
            raise FileNotFoundError(f"no instructor notebook {src} (run `python -m grader build`)")
        dest = out / "source" / name / f"{name}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        written.append(dest)
    config = out / "nbgrader_config.py"
    config.write_text(CONFIG.format(timeout=timeout))
    written.append(config)
    return written
