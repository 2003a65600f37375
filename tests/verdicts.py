"""Assertions on check verdicts, used by every lesson's tests."""
from grader import evaluate


def assert_passes(obj, name: str) -> None:
    """A correct implementation passes with full points."""
    report = evaluate(obj, name=name)
    assert report.passed and report.points == report.max_points, report.text()


def names_mistake_or_action(message: str) -> bool:
    """A failure message says why or what to do, not only what differs: its first line goes on after a dash
    ("got (4,) — keepdim=True?"), says what it should do ("should raise ValueError"), or a diagnosis line
    ("→ ...") follows, or it reports the learner's own exception (which names itself and its line)."""
    first, *rest = message.splitlines() or [""]
    return (" — " in first or " should " in f" {first}" or first.startswith("raised ")
            or any(line.startswith("→ ") for line in rest))


def assert_rejects(obj, name: str, *fragments: str) -> None:
    """A wrong implementation fails; some failing case's message names the mistake (every fragment); and every
    failing case's message names a mistake or an action (no bare "expected X, got Y")."""
    report = evaluate(obj, name=name)
    assert report.status == "failed" and report.points == 0, report.text()
    failed = [c for c in report.cases if not c.passed and not c.skipped]
    messages = [report.error] + [f"{c.name}\n{c.message}" for c in failed]
    assert any(all(f.lower() in m.lower() for f in fragments) for m in messages), (
        f"no failure message mentions {fragments}:\n{report.text()}")
    bare = [f"{c.name}: {c.message}" for c in failed if not names_mistake_or_action(c.message)]
    if report.error and not names_mistake_or_action(report.error):
        bare.append(report.error)
    assert not bare, "messages that name neither a mistake nor an action:\n" + "\n".join(bare)
