"""`python -m evaluate.ablation RUN_OR_ROOT... --out DIR`: the command; the table is evaluate/analysis/ablation.py."""
from evaluate.analysis.ablation import main

if __name__ == "__main__":
    main()
