import sys

try:
    from grader.cli import main
    sys.exit(main())
except KeyboardInterrupt:  # before grading started (grading says more itself)
    print("interrupted", file=sys.stderr)
    sys.exit(130)
