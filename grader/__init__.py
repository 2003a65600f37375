"""torchdojo's grader: automatic checks for every exercise of the course."""
from grader.api import check, evaluate, hint, progress
from grader.class_report import class_report
from grader.report import CaseResult, Report

__all__ = ["check", "evaluate", "hint", "progress", "class_report", "Report", "CaseResult"]
