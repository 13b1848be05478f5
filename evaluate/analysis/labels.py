"""Names shown in tables and figures: the dense baseline, the paper's suite columns and method names, and the
label of a pruner variant. Tables (analysis/report.py), figures (analysis/plots.py) and overlays read them here,
so a variant is named the same everywhere and plots need not import the report.
"""
from __future__ import annotations

from typing import Mapping

from baselines import METHOD_NAMES as BASELINE_NAMES
from evaluate.config import pruner_tag
from evaluate.envs.suites import paper_columns, perturbed_suites

DENSE_PRUNER = "none"
# The paper's column and row names (suite columns: the suite table, evaluate/envs/suites.py).
SUITE_COLUMNS = paper_columns()
# LIBERO-PRO's perturbed suites (name -> row with `base`, `perturbation`) and their columns: the paper's averages
# (relative accuracy, pi0's avg_sr) stay over the unperturbed suites, the perturbed ones get their own
PERTURBED = perturbed_suites()
PERTURBED_COLUMNS = {SUITE_COLUMNS[name] for name in PERTURBED}
# The paper's order of the methods (rows and legends); a pruner not listed comes after them.
METHOD_ORDER = ("none", "fastv", "sparsevlm", "divprune", "vla_cache", "vla", "random")
# Table names by registry name: the library's own here, the baselines' beside their classes (baselines/__init__.py).
METHOD_NAMES = {name: {"none": "Dense", "vla": "VLA-Pruner", **BASELINE_NAMES}[name] for name in METHOD_ORDER}
METHOD_NAMES.update({name: label for name, label in BASELINE_NAMES.items() if name not in METHOD_NAMES})
# Group files that preset a pruner's options (configs/pruner/<stem>.yaml): a row's name says which reading it is.
PRESET_NAMES = {"vla_released": "VLA-Pruner (as released)"}
# Our rows that read a paper row two ways (scripts/collect.py): both are compared with the paper's numbers.
READINGS = {"VLA-Pruner": ("VLA-Pruner", "paper"), "VLA-Pruner (as released)": ("VLA-Pruner", "as released"),
            "VLA-Cache": ("VLA-Cache", "paper"), "VLA-Cache (behaviour=released)": ("VLA-Cache", "as released"),
            # DivPrune at the shared cut is how the VLA-Pruner paper ran it; at K=0 it is DivPrune's own point
            "DivPrune": ("DivPrune", "paper"), "DivPrune (prune_layer=0)": ("DivPrune", "own point"),
            "DivPrune (prune_layer=0, positions=renumbered)": ("DivPrune", "as released")}


def paper_row(method: str) -> tuple[str, str]:
    """(the paper's method name this row is compared with, which reading it is: 'paper', 'as released' or '')."""
    return READINGS.get(method, (method, ""))


def method_label(identity: Mapping) -> str:
    """`VLA-Pruner`, or `VLA-Pruner (criterion=semantic_only)` when pruner options differ from the defaults in
    configs/pruner/<name>.yaml: the rule that names run directories (evaluate.config.pruner_tag), so a table row
    and its directory say the same. `identity` is the whole run identity, so that defaults depending on more than
    the pruner (e.g. per model) are added here and nowhere else."""
    model = identity.get("model") or {}
    name, *changed = pruner_tag(dict(identity["pruner"]), model.get("family"), model.get("name")).split(",")
    base = PRESET_NAMES.get(name) or METHOD_NAMES.get(name, name)
    return f"{base} ({', '.join(changed)})" if changed else base


def method_order(pruner: str) -> int:
    """Rows and legends list the known pruners in the paper's order, others after."""
    return METHOD_ORDER.index(pruner) if pruner in METHOD_ORDER else len(METHOD_ORDER)
