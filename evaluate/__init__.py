"""The evaluation harness: the `python -m evaluate` runtime (runner, rollout, store, summary) at this level;
benchmarks in envs/, policies in policies/, reading finished runs in analysis/."""
