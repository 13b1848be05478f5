"""Benchmarks behind one seam (base.py): a benchmark's environments yield model-agnostic observations.
LIBERO is one benchmark (libero.py; its goals for the scripted expert in libero_goals.py); suites.py lists them."""
