"""Assertions on check verdicts, used by every lesson's tests."""
from grader import evaluate


def assert_passes(obj, name: str) -> None:
    """A correct implementation passes with full points."""
    report = evaluate(obj, name=name)
    assert report.passed and report.points == report.max_points, report.text()


def assert_rejects(obj, name: str, *fragments: str) -> None:
    """A wrong implementation fails, and some failing case's message names the mistake (every fragment)."""
    report = evaluate(obj, name=name)
    assert report.status == "failed" and report.points == 0, report.text()
    messages = [report.error] + [f"{c.name}\n{c.message}" for c in report.cases if not c.passed and not c.skipped]
    assert any(all(f.lower() in m.lower() for f in fragments) for m in messages), (
        f"no failure message mentions {fragments}:\n{report.text()}")
