"""Offline pruning fidelity (`python -m evaluate.fidelity`): how far each pruner setting moves the model's actions
from the dense model's, on recorded observation streams instead of closed-loop rollouts.

config.py  the command line (overrides, one-line errors before weights load)   replay.py  the replay loop
measures.py  per-query distances and their per-setting summary                outputs.py  csv, md, plot
success.py  `python -m evaluate.fidelity.success`: does fidelity rank settings as closed-loop success does?
"""
