"""A model family defined outside the project runs through the FLOPs command and a run with no edit of the harness:
its package (the record), its adapter module and its model YAML are all the project reads (issues 28, 41).
In-process (the record and adapter registered from this module), and as an installed package would ship it: a
directory on PYTHONPATH holding the family's package, its adapter module and model YAML, their entry points
(`vla_pruner.model_families`, `evaluate.family_adapters`) and a Hydra search-path plugin, run through the real CLIs
with every pruner it offers."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evaluate import flops
from evaluate.config import validate
from evaluate.policies import POLICIES, adapter
from vla_pruner import families
from vla_pruner.families import ModelFamily, register_family
from tests.conftest import REPO, composed

# The family as a package ships it (written to a temporary directory by `installed`): an OpenVLA-architecture
# family (its record's cost is an OpenVLA variant) with its own cut: its record says K = 2, which no harness table
# knows. Its adapter reads and decodes as OpenVLA's does, so it is OpenVLA's adapter under the family's name.
PACKAGE = {
    "toy_family/__init__.py": """
        from vla_pruner.families import ModelFamily
        from vla_pruner.models.openvla.action_tokenizer import select_action_stats
        from vla_pruner.models.openvla.config import OFFICIAL_OPENVLA_CONFIG
        from vla_pruner.models.openvla.tiny_configs import TINY_CONFIG
        from vla_pruner.models.openvla.cost import OpenVLAVariant

        VARIANT = OpenVLAVariant(
            decode_steps=6, prefill_logit_rows=1, extra_tokens=0, part_files=(),
            default_unnorm_key=lambda suite: suite, select_stats=select_action_stats,
            official_config=lambda: OFFICIAL_OPENVLA_CONFIG,
            tiny_config=lambda: TINY_CONFIG,
        )
        FAMILY = ModelFamily(name="toy_vla", num_images=1, cost=VARIANT, pruner_defaults={"prune_layer": 2})
        """,
    "toy_family_adapter.py": """
        from evaluate.policies.openvla import OpenVLAAdapter


        class ToyAdapter(OpenVLAAdapter):
            \"\"\"The toy family reads one camera and decodes seven action tokens, as OpenVLA does.\"\"\"


        ADAPTER = ToyAdapter()
        """,
    "toy_family/conf/model/toy_tiny.yaml": """
        name: toy_tiny
        family: toy_vla
        note: "a family from outside the project (tests/test_family_outside_tree.py)"
        checkpoint: null
        checkpoints: {}
        build_seed: 0
        unnorm_key: null
        dtype: auto
        """,
    "hydra_plugins/toy_family_searchpath/__init__.py": """
        from pathlib import Path

        from hydra.plugins.search_path_plugin import SearchPathPlugin


        class ToyFamilySearchPath(SearchPathPlugin):
            def manipulate_search_path(self, search_path):
                search_path.append("toy_family", "file://" + str(Path(__file__).parents[2] / "toy_family" / "conf"))
        """,
    "toy_family-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: toy-family\nVersion: 0.1\n",
    "toy_family-0.1.dist-info/entry_points.txt": ("[vla_pruner.model_families]\ntoy_vla = toy_family:FAMILY\n\n"
                                                  "[evaluate.family_adapters]\ntoy_vla = toy_family_adapter:ADAPTER\n"),
}
# every pruner the toy family offers: the pruner group's options (configs/pruner/*.yaml)
PRUNER_OPTIONS = sorted(p.stem for p in (REPO / "configs" / "pruner").glob("*.yaml"))


def _package_module(name: str) -> dict:
    """A module of the package run in this process, for the tests that register it in-process (written once)."""
    namespace: dict = {}
    exec(textwrap.dedent(PACKAGE[name]), namespace)
    return namespace


TOY: ModelFamily = _package_module("toy_family/__init__.py")["FAMILY"]
TOY_ADAPTER = _package_module("toy_family_adapter.py")["ADAPTER"]
TOY_MODEL = ["model=openvla_tiny", "model.name=toy_tiny", "model.family=toy_vla"]  # its YAML, as overrides


@pytest.fixture
def toy():
    register_family(TOY)
    adapter.register_adapter(TOY.name, TOY_ADAPTER)
    try:
        yield TOY
    finally:
        families._REGISTERED.pop(TOY.name, None)
        adapter._REGISTERED.pop(TOY.name, None)


def test_the_flops_command_counts_it_with_its_own_defaults(toy, capsys):
    flops.main([*TOY_MODEL, "pruner=fastv", "keep=0.25"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("model toy_tiny: LLM d=128")
    assert "cut before layer K=2, 99 tokens from there" in out[3]  # 35 prompt + 64 kept, from the record's K


def test_a_run_of_it_is_composed_and_checked_as_any_other(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("VLA_PRUNER_CACHE", str(tmp_path / "cache"))
    cfg = composed(*TOY_MODEL, "pruner=vla", "keep=0.25", f"output_root={tmp_path}")
    assert cfg.pruner.prune_layer == 2 and cfg.run_name.startswith("toy_tiny/")
    validate(cfg, POLICIES)  # the checkpoint it will be built as, its statistics, the pruner on its layout


def test_an_unregistered_family_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit, match="error: model 'toy_tiny' has family 'toy_vla'; known: openvla, "
                                         "openvla_oft, pi0"):
        flops.main([*TOY_MODEL, "pruner=fastv", "keep=0.25"])


def installed(root: Path) -> dict:
    """The package written under `root`, and the environment of a command that has it installed."""
    for name, text in PACKAGE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)]),
            "VLA_PRUNER_CACHE": str(root / "cache"), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def command(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


# steps of each pruner's episode (one action a query): VLA-Pruner's and VLA-ADP's first 3 queries are dense, so 6
# leaves each of them 3 queries past it; the episodes' length is most of this test's time (ten runs of the multirun)
STEPS = 6


@pytest.mark.sim
def test_an_installed_family_runs_through_the_cli_and_the_flops_command(tmp_path):
    env = installed(tmp_path / "site")
    flops_out = command(env, "evaluate.flops", "model=toy_tiny", "pruner=fastv", "keep=0.25")
    assert flops_out.returncode == 0, flops_out.stderr[-2000:]
    assert "cut before layer K=2, 99 tokens from there" in flops_out.stdout  # the record's own K
    refused = command(env, "evaluate", "model=toy_tinny")
    assert refused.returncode != 0 and "valid choices: openvla, openvla_oft" in refused.stderr
    assert "toy_tiny" in refused.stderr.splitlines()[-1]  # its YAML is one of the model options
    run = command(env, "evaluate", "-m", "model=toy_tiny", f"pruner={','.join(PRUNER_OPTIONS)}", "keep=0.25",
                  "tasks=[0]", "episodes_per_task=1", f"suite.max_steps={STEPS}", f"output_root={tmp_path / 'runs'}")
    assert run.returncode == 0, run.stderr[-3000:]
    summaries = {path.relative_to(tmp_path / "runs").parts[2]: path for path in (tmp_path / "runs").rglob("summary.json")}
    assert sorted(summaries) == sorted(f"{option}-keep0.25" for option in PRUNER_OPTIONS)  # an episode each
    for path in summaries.values():
        summary = json.loads(path.read_text())
        assert path.relative_to(tmp_path / "runs").parts[:2] == ("toy_tiny", "libero_object")
        assert summary["complete"] and summary["episodes"] == 1
    config = (summaries["vla-keep0.25"].parent / "config.yaml").read_text()
    assert "family: toy_vla" in config and "prune_layer: 2" in config
