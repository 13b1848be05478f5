"""Adding a pruner the documented way (docs/extending.md): the in-tree baselines are found from their table with no
entry point installed (no re-install after adding a row), and a pruner of another package (its module, its entry
point in group `vla_pruner.pruners`, its group YAML through a Hydra search-path plugin) is composed, checked and
counted by the real CLIs with no edit of the project."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from omegaconf import OmegaConf

import baselines
from evaluate.analysis.labels import METHOD_NAMES
from tests.conftest import REPO

PACKAGE = {
    "toy_pruner/__init__.py": """
        from dataclasses import dataclass

        import torch

        from vla_pruner.pruning import DEFAULT_PRUNE_LAYER, DroppingConfig, PrunePlan, Selection, SingleCutPruner


        @dataclass(frozen=True)
        class KeepFirstConfig(DroppingConfig):
            prune_layer: int = DEFAULT_PRUNE_LAYER


        class KeepFirst(SingleCutPruner):
            \"\"\"Keeps each image's first tokens: a pruner that needs nothing from the engine.\"\"\"

            name = "keep_first"
            Config = KeepFirstConfig

            def make_plan(self):
                return PrunePlan(stages=(self.cut(),))

            def choose(self, inputs):
                return Selection(kept=[torch.arange(k) for k in self.budgets], num_rows=self.rows_per_image(inputs))
        """,
    "toy_pruner/conf/pruner/keep_first.yaml": """
        name: keep_first
        prune_layer: ${model_default:prune_layer}
        dense_warmup: 0
        """,
    "hydra_plugins/toy_pruner_searchpath/__init__.py": """
        from pathlib import Path

        from hydra.plugins.search_path_plugin import SearchPathPlugin


        class ToyPrunerSearchPath(SearchPathPlugin):
            def manipulate_search_path(self, search_path):
                search_path.append("toy_pruner", "file://" + str(Path(__file__).parents[2] / "toy_pruner" / "conf"))
        """,
    "toy_pruner-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: toy-pruner\nVersion: 0.1\n",
    "toy_pruner-0.1.dist-info/entry_points.txt": "[vla_pruner.pruners]\nkeep_first = toy_pruner:KeepFirst\n",
}


def python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_in_tree_pruners_are_found_without_any_entry_point():
    """As after adding a row to baselines.PRUNER_CLASSES without re-installing: no entry point is read at all."""
    result = python("""
        from importlib import metadata
        metadata.entry_points = lambda **kw: []  # nothing installed
        from vla_pruner.pruning import PRUNERS, ModelLayout, build_pruner
        layout = ModelLayout(8, (256,))
        for name in ("fastv", "sparsevlm", "divprune", "vla_cache", "gated_vla_cache", "vla_adp", "specprune", "random", "vla",
                     "none"):
            assert build_pruner({"name": name}, 0.25, layout).name == name, name
        print(sorted(PRUNERS))
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(["divprune", "fastv", "gated_vla_cache", "none", "random", "sparsevlm", "specprune", "vla",
                                          "vla_adp", "vla_cache"])


def test_every_in_tree_pruner_has_its_group_file_and_table_name():
    """The documented in-tree files: its module and rows in baselines/__init__.py, its configs/pruner YAML."""
    group_names = {OmegaConf.load(p).name for p in (REPO / "configs" / "pruner").glob("*.yaml")}
    for name, target in baselines.PRUNER_CLASSES.items():
        module = target.partition(":")[0]
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), target
        assert name in group_names and METHOD_NAMES[name] == baselines.METHOD_NAMES[name], name


def test_a_pruner_of_another_package_runs_through_the_clis(tmp_path):
    site = tmp_path / "site"
    for name, text in PACKAGE.items():
        path = site / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
           "VLA_PRUNER_CACHE": str(tmp_path / "cache")}
    flops = subprocess.run([sys.executable, "-m", "evaluate.flops", "model=openvla_tiny", "pruner=keep_first",
                            "keep=0.25"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert flops.returncode == 0, flops.stderr[-2000:]
    assert "pruner=keep_first, keep=0.25, cut before layer K=3" in flops.stdout  # its YAML: the family's K
    checked = python(f"""
        from evaluate.config import validate
        from evaluate.policies import POLICIES
        from tests.conftest import composed
        cfg = composed("model=openvla_tiny", "model.build_seed=0", "pruner=keep_first", "keep=0.25",
                       "output_root={tmp_path / 'runs'}")
        validate(cfg, POLICIES)
        print(cfg.run_name)
        """, env)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert checked.stdout.split("/")[2] == "keep_first-keep0.25"
