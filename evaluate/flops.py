"""`python -m evaluate.flops [overrides]`: the command; the counts are in evaluate/analysis/flops.py."""
import sys

from evaluate.analysis.flops import main

if __name__ == "__main__":
    main(sys.argv[1:])
