"""The course as an nbgrader course directory: source/<lesson>/<lesson>.ipynb plus nbgrader_config.py.

solutions/NN_topic.ipynb already carries nbgrader's markers and cell metadata (see grader.build), so nbgrader's
own generate_assignment makes exactly the learner's notebook from it. The config sets a generous execution
timeout, makes autograde refuse a hidden seed unless the instructor opts in (in-kernel grading cannot keep it
from the learner's code), and adds RedactHiddenCases to generate_feedback.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from nbconvert.exporters import NotebookExporter
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

from grader.build import ROOT, sources
from grader.runner import HIDDEN_SEED_ENV

ALLOW_HIDDEN_ENV = "TORCHDOJO_NBGRADER_ALLOW_HIDDEN"

CONFIG = '''"""nbgrader configuration for the torchdojo course (written by `python -m grader nbgrader-course`)."""
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "torchdojo"
c.CourseDirectory.assignment_id = ""
# A lesson's checks run well under a minute; training lessons take longer on a slow CPU.
c.ExecutePreprocessor.timeout = {timeout}
c.Execute.timeout = {timeout}
c.ExecutePreprocessor.interrupt_on_timeout = True
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
# TORCHDOJO_HIDDEN_SEED adds the hidden round, but learner code runs in the same kernel as the checks and can
# read it: autograde refuses it unless TORCHDOJO_NBGRADER_ALLOW_HIDDEN=1 (trusted students only). Prefer
# `python -m grader grade`, which keeps the seed out of the learner's process.
c.Autograde.exporter_class = "grader.grading.nbgrader_course.AutogradeExporter"
# (Classes are named by string, so that only the commands that use them import torch.)
# Feedback shows hidden cases only as "hidden case" (no inputs, no values) and never the seed's value.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "grader.grading.nbgrader_course.RedactHiddenCases",
]
'''


def hidden_seed_refusal(environ=os.environ) -> str | None:
    """Why nbgrader autograde must not run with this environment, or None when it may."""
    if not environ.get(HIDDEN_SEED_ENV, "").strip() or environ.get(ALLOW_HIDDEN_ENV) == "1":
        return None
    return (f"{HIDDEN_SEED_ENV} is set, but nbgrader autograde runs the checks in the learner's own kernel: "
            f"the learner's code can read the seed (os.environ) and print it into their feedback, or patch the "
            f"grader to pass, so the hidden round protects nothing there. Grade the hidden round with the "
            f"sandboxed batch grader instead, which keeps the seed out of the learner's process: "
            f"`python -m grader grade --lesson <lesson> submitted/ --out grades/` with {HIDDEN_SEED_ENV} set. "
            f"Or unset {HIDDEN_SEED_ENV} to autograde the public round only, or, if you trust your students, "
            f"set {ALLOW_HIDDEN_ENV}=1 to run the hidden round under nbgrader anyway.")


class AutogradeExporter(NotebookExporter):
    """nbgrader autograde's exporter, which nbgrader builds once before it touches any submission: refuses a
    hidden seed (see hidden_seed_refusal) there, so nothing is graded and the command exits with status 1."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        refusal = hidden_seed_refusal()
        if refusal:
            from nbgrader.converters.base import NbGraderException
            self.log.error(refusal)
            raise NbGraderException(refusal)


class RedactHiddenCases(Preprocessor):
    """In every output, the hidden seed's value (from the environment) becomes "<hidden seed>". (Hidden cases
    themselves never show inputs or diagnoses: Tester.case records only their number and verdict.)"""

    # nbconvert's preprocessors are off by default, and nbgrader registers the configured ones without enabling
    # them (BaseConverter.start calls exporter.register_preprocessor(pp), enabled=False): switch it on here.
    enabled = Bool(True).tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        seed = os.environ.get(HIDDEN_SEED_ENV, "").strip()

        def scrub(value):
            if isinstance(value, str):
                return value.replace(seed, "<hidden seed>") if seed else value
            if isinstance(value, list):
                return [scrub(v) for v in value]
            if isinstance(value, dict):
                return {k: scrub(v) for k, v in value.items()}
            return value

        for out in cell.get("outputs", []):
            for key in ("text", "evalue", "traceback"):  # stream text, error message and traceback
                if key in out:
                    out[key] = scrub(out[key])
            for mime, value in out.get("data", {}).items():  # every text-like mimetype; base64 images stay
                if not _base64(mime):
                    out["data"][mime] = scrub(value)
        return cell, resources


def _base64(mime: str) -> bool:
    return mime == "application/pdf" or (mime.startswith("image/") and not mime.endswith("+xml"))


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
