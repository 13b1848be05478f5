"""The harness on both sides of vla-eval's model-server protocol (allenai's vla-eval, `pip install -e .[serve]`).

`python -m evaluate.serve` serves any model and pruner of the harness (evaluate/serve/server.py: a vla-eval
`PredictModelServer`), recording the served episodes as a run directory (records.py); `policy=remote`
(evaluate/policies/remote.py) runs the harness's episodes against any vla-eval model server. wire.py is the
observation and action format both speak: vla-eval's LIBERO benchmark's. Only this package and remote.py import
vla_eval, and only when used.
"""
