"""`python -m evaluate.overlay RUN_A RUN_B ...`: the command; the drawing is in evaluate/analysis/overlay.py."""
from evaluate.analysis.overlay import main

if __name__ == "__main__":
    main()
