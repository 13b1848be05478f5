"""The baseline visual-token pruners on the vla_pruner Pruner interface: FastV, SparseVLM, DivPrune, VLA-Cache
(KV reuse, not deletion) and Gated VLA-Cache, VLA-ADP, SpecPrune-VLA and random.

`PRUNER_CLASSES` is their table ("module:Class" by name): the registry (`vla_pruner.pruning.PRUNERS`) reads it when
a name is not otherwise found and imports a module when its pruner is first asked for, so a new baseline is a
module here and a row below, found without a re-install; importing this package imports no pruner. `METHOD_NAMES`:
the name each one's rows have in tables and figures (evaluate/analysis/labels.py).
"""

PRUNER_CLASSES = {
    "divprune": "baselines.divprune:DivPrune",
    "fastv": "baselines.fastv:FastV",
    "gated_vla_cache": "baselines.gated_vla_cache:GatedVLACache",
    "random": "baselines.random_keep:RandomKeep",
    "sparsevlm": "baselines.sparsevlm:SparseVLM",
    "specprune": "baselines.specprune:SpecPrune",
    "vla_adp": "baselines.vla_adp:VLAADP",
    "vla_cache": "baselines.vla_cache:VLACache",
}
METHOD_NAMES = {"divprune": "DivPrune", "fastv": "FastV", "gated_vla_cache": "Gated VLA-Cache", "random": "Random",
                "sparsevlm": "SparseVLM", "specprune": "SpecPrune-VLA", "vla_adp": "VLA-ADP", "vla_cache": "VLA-Cache"}
