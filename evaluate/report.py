"""`python -m evaluate.report RUN_OR_ROOT... --out DIR`: the command; the tables are in evaluate/analysis/report.py."""
from evaluate.analysis.report import main

if __name__ == "__main__":
    main()
