"""Reading finished runs: tables, plots, cost metrics and FLOPs, token overlays. Nothing here runs a simulator
or a model; the commands are `python -m evaluate.report`, `evaluate.flops` and `evaluate.overlay`."""
