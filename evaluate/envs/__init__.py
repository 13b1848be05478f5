"""Benchmarks behind one seam (base.py): a suite family's environments yield model-agnostic observations.
LIBERO is one family (libero.py; its goals for the scripted expert in libero_goals.py); suites.py lists them."""
