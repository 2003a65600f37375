"""A Gradescope autograder for one lesson: `python -m grader gradescope-autograder --lesson 01_tensors --out dist/`.

Gradescope builds a Docker image once from the zip (unpacked in /autograder/source, then setup.sh runs as root
with internet access); for each submission it starts a container from that image, puts the student's upload in
/autograder/submission and runs run_autograder, which must leave /autograder/results/results.json. The zip holds
those two scripts and course/: what `python -m grader grade` needs for this lesson, nothing more.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from grader.build import ROOT
from grader.registry import lesson as known_lesson

SEED_DIR = "private"  # in the zip: holds hidden_seed, readable by root only and hidden from the sandboxes

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root and with internet access, when it builds the autograder's image
# (Ubuntu). It installs the course, unpacked next to this script, with pip.
set -euo pipefail
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
apt-get update
apt-get install -y python3 python3-pip
# Ubuntu 24.04 marks the system Python as externally managed (PEP 668); this lets pip install into it as on
# 22.04 (older pips ignore the variable).
export PIP_BREAK_SYSTEM_PACKAGES=1
# torch from PyPI bundles CUDA libraries (gigabytes) that Gradescope, which has no GPU, never uses. The CPU-only
# build is enough and much smaller; to use it, install it first from PyTorch's index:
#   python3 -m pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu
# Editable, so that the grader finds lessons/ (and datasets/) in $SOURCE/course.
python3 -m pip install -e "$SOURCE/course"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this for each submission, as root, in /autograder: the student's upload is in submission/,
# the autograder zip's content in source/, and results/results.json must exist when it ends, whatever happens.
# AUTOGRADER_ROOT (default /autograder) and TORCHDOJO_PYTHON (default python3) let it run elsewhere.
set -u
LESSON="@LESSON@"
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PY="${TORCHDOJO_PYTHON:-python3}"
COURSE="$ROOT/source/course"
SEED_DIR="$ROOT/source/@SEED_DIR@"
RESULTS="$ROOT/results/results.json"
HINT="Submit one notebook, $LESSON.ipynb with your answers (JupyterLab: File → Download)."
START=$SECONDS
mkdir -p "$ROOT/results"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Score 0 and what to do, for the student. Written by the shell, so it works even when Python does not.
give_zero() {
  echo "score 0: $1"
  cat > "$RESULTS" <<EOF
{"score": 0, "execution_time": $((SECONDS - START)), "visibility": "visible", "stdout_visibility": "hidden",
 "output": "$1 $HINT"}
EOF
  exit 0
}

# The notebook: the one named $LESSON.ipynb if there is exactly one, else the only notebook uploaded.
mapfile -d '' BOOKS < <(find "$ROOT/submission" -type f -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' \
                        -print0 2>/dev/null | sort -z)
NAMED=()
for book in "${BOOKS[@]}"; do
  [[ "$(basename "$book")" == "$LESSON.ipynb" ]] && NAMED+=("$book")
done
if (( ${#NAMED[@]} == 1 )); then
  BOOK="${NAMED[0]}"
elif (( ${#BOOKS[@]} == 1 )); then
  BOOK="${BOOKS[0]}"
elif (( ${#BOOKS[@]} == 0 )); then
  give_zero "Your submission holds no notebook (.ipynb file)."
else
  give_zero "Your submission holds ${#BOOKS[@]} notebooks and the autograder grades exactly one."
fi
echo "grading $BOOK"

ARGS=(-m grader grade --lesson "$LESSON" "$BOOK" --out "$WORK/out" --gradescope --workers 1)
if [[ -f "$SEED_DIR/hidden_seed" ]]; then
  # Closed to every user but root, and given to --hide, which lays an empty folder over it in each sandbox.
  # Hiding folders (and the sandbox's network namespace) needs root with CAP_SYS_ADMIN, which Docker does not
  # grant by default and Gradescope's documentation does not mention: assume it is missing there. The seed then
  # stays out of reach because each sandbox also drops to an unprivileged uid (needs only CAP_SETUID/SETGID,
  # which Docker grants), and that uid cannot enter a folder of mode 700.
  chmod 700 "$SEED_DIR" && chmod 600 "$SEED_DIR/hidden_seed"
  export TORCHDOJO_HIDDEN_SEED="$(cat "$SEED_DIR/hidden_seed")"
  ARGS+=(--hide "$SEED_DIR")
fi
export TORCHDOJO_DEVICES="${TORCHDOJO_DEVICES:-cpu}"
export PYTHONPATH="$COURSE${PYTHONPATH:+:$PYTHONPATH}"
cd "$COURSE" || give_zero "The autograder is not installed correctly; tell your instructor."
echo "grader: $("$PY" -c 'import importlib.util; print(importlib.util.find_spec("grader").origin)' 2>&1)"
"$PY" "${ARGS[@]}"
echo "grader exit status: $?"

# A graded notebook has exactly one results.json, even when it could not be read (it then says why).
shopt -s nullglob
FOUND=("$WORK"/out/gradescope/*/results.json)
if (( ${#FOUND[@]} != 1 )); then
  give_zero "The autograder could not grade your notebook; if resubmitting does not help, tell your instructor."
fi
# The grader's results.json, plus the run's duration, and the hint when the notebook could not be graded.
if ! "$PY" - "${FOUND[0]}" "$RESULTS" "$((SECONDS - START))" "$HINT" <<'EOF'
import json, sys
from pathlib import Path
found = Path(sys.argv[1])
results = json.loads(found.read_text())
results["execution_time"] = int(sys.argv[3])
record = found.parents[2] / f"{found.parent.name}.json"  # the grader's own record: out/<student>.json
if not record.exists() or json.loads(record.read_text()).get("status") != "graded":
    results["output"] = results.get("output", "") + "\n" + sys.argv[4] + "\n"
with open(sys.argv[2], "w") as f:
    json.dump(results, f, indent=1)
EOF
then
  give_zero "Grading failed; tell your instructor."
fi
"""


def datasets_for(lesson: str) -> list[str]:
    """The folders of datasets/ that grading `lesson` reads: those that its notebook's code or its check module
    name in a string literal, when that code calls datasets_dir()."""
    cells = json.loads((ROOT / "lessons" / f"{lesson}.ipynb").read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c.get("cell_type") == "code"]
    check = ROOT / "grader" / "checks" / f"lesson{lesson}.py"
    if check.exists():
        code.append(check.read_text())
    text = "\n".join(code)
    if "datasets_dir(" not in text:
        return []
    folders = sorted(d.name for d in (ROOT / "datasets").iterdir() if d.is_dir())
    return [d for d in folders if f'"{d}"' in text or f"'{d}'" in text]


def course_files(lesson: str) -> list[Path]:
    """What course/ holds, relative to the repository: the packaging files, the grader's Python sources, the
    lesson notebook and the datasets it reads (with datasets/README.md, which credits their sources)."""
    files = [Path("pyproject.toml"), Path("README.md"), Path("lessons") / f"{lesson}.ipynb"]
    files += sorted(p.relative_to(ROOT) for p in (ROOT / "grader").rglob("*.py") if "__pycache__" not in p.parts)
    sets = datasets_for(lesson)
    if sets:
        files.append(Path("datasets") / "README.md")
    for name in sets:
        files += sorted(p.relative_to(ROOT) for p in (ROOT / "datasets" / name).rglob("*") if p.is_file())
    return files


def write_autograder(lesson: str, out: Path, hidden_seed: int | None = None) -> Path:
    """Write out/autograder-<lesson>.zip, ready to upload on the assignment's "Configure Autograder" page.
    With `hidden_seed`, every submission is also graded on hidden cases drawn from it."""
    known_lesson(lesson)  # a ValueError that lists the lessons
    if hidden_seed is not None and not isinstance(hidden_seed, int):
        raise TypeError(f"hidden_seed must be an int, got {type(hidden_seed).__name__}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"autograder-{lesson}.zip"
    run = RUN_AUTOGRADER.replace("@LESSON@", lesson).replace("@SEED_DIR@", SEED_DIR)
    tmp = out / f".{target.name}.{os.getpid()}.tmp"
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            _add(z, "setup.sh", SETUP_SH.encode(), 0o755)
            _add(z, "run_autograder", run.encode(), 0o755)
            for rel in course_files(lesson):
                _add(z, f"course/{rel.as_posix()}", (ROOT / rel).read_bytes(), 0o644)
            if hidden_seed is not None:
                _add(z, f"{SEED_DIR}/hidden_seed", f"{hidden_seed}\n".encode(), 0o600)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _add(z: zipfile.ZipFile, name: str, data: bytes, mode: int) -> None:
    """A Unix entry with permissions and a fixed date, so the same course gives the same zip."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.create_system = 3
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    z.writestr(info, data)
