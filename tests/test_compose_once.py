"""One pass per command: `python -m evaluate ...` composes each run's configuration once, checks it once and builds
its pruner once before the run starts (the check before anything runs and Hydra's start of the run read the same
composition)."""
import json
import subprocess
import sys
import textwrap

from tests.conftest import REPO

COUNT = """
    import json, runpy, sys
    from unittest import mock

    import evaluate.config as config
    import evaluate.config.checks as checks
    import evaluate.preflight as preflight
    import evaluate.runner as runner
    from evaluate.config import hydra_io
    from evaluate.policies import build_policy
    from vla_pruner.pruning import Pruner

    counts = {"validate": 0, "pruners": 0}

    def counting(name, function):
        def call(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)
        return call

    validate = counting("validate", checks.validate)
    init = Pruner.__init__

    def counted_init(self, *args, **kwargs):
        counts["pruners"] += type(self).name == PRUNER
        init(self, *args, **kwargs)

    def run(cfg):  # what a run does before its first episode: build the policy (weights load, the pruner)
        if cfg.policy.name == "vla":
            build_policy(cfg)
        return {"run_dir": "-", "episodes": 0, "successes": 0, "success_rate": 0.0, "complete": True}

    with mock.patch.object(config, "validate", validate), mock.patch.object(preflight, "validate", validate), \\
            mock.patch.object(Pruner, "__init__", counted_init), mock.patch.object(runner, "run", run):
        sys.argv = ["evaluate", *ARGS]
        runpy.run_module("evaluate", run_name="__main__")  # python -m evaluate ARGS
    compositions = [" ".join(o for o in overrides if not o.startswith("output_root="))
                    for _, overrides in hydra_io.COMPOSITIONS]
    print("COUNTS", json.dumps({**counts, "compositions": compositions}))
"""


def counts(tmp_path, *args: str, pruner: str = "none") -> dict:
    code = textwrap.dedent(COUNT).replace("ARGS", repr([*args, f"output_root={tmp_path}"])).replace(
        "PRUNER", repr(pruner))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={"VLA_PRUNER_CACHE": str(tmp_path / "cache"), **__import__("os").environ})
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = [line for line in result.stdout.splitlines() if line.startswith("COUNTS")]
    return json.loads(line.split(" ", 1)[1])


def test_a_run_is_composed_checked_and_its_pruner_built_once(tmp_path):
    assert counts(tmp_path, "model=openvla_tiny", "model.build_seed=0", "pruner=fastv", "keep=0.25",
                  pruner="fastv") == {"validate": 1, "pruners": 1, "compositions": [
        "model=openvla_tiny model.build_seed=0 pruner=fastv keep=0.25"]}


def test_a_sweep_composes_and_checks_each_point_once(tmp_path):
    found = counts(tmp_path, "-m", "policy=noop", "seed=1,2")
    assert found["validate"] == 2 and found["pruners"] == 0
    # each point once (besides the sweep's own configuration, which Hydra reads to expand it into the points)
    points = [c for c in found["compositions"] if c != "policy=noop seed=1,2"]
    assert sorted(points) == ["policy=noop seed=1", "policy=noop seed=2"]
