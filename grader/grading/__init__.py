"""Batch grading of submitted notebooks: untrusted learner code in sandboxes, verdicts in trusted judges.

See README.md in this folder for the threat model and guarantees. Entry points: `batch.grade` (the
`python -m grader grade` command) and `nbgrader_course.export` (`python -m grader nbgrader-course`).
"""
