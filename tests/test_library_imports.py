"""The library's modules import one another one way (issue 12): no circles in vla_pruner or baselines (lazy
imports included), the engine knows the layer loop but no model class, and the layout stands alone."""
from tests.conftest import REPO
from tests.test_import_graph import circles, import_graph


def test_library_and_baselines_have_no_import_circles():
    for package in ("vla_pruner", "baselines"):
        assert circles(import_graph(REPO, package)) == [], package


def test_models_run_on_the_engine_which_knows_no_model_class():
    graph = import_graph(REPO, "vla_pruner")
    assert graph["vla_pruner.engine"] == {"vla_pruner.layout", "vla_pruner.models.llama", "vla_pruner.pruning",
                                          "vla_pruner.protocol", "vla_pruner.kv_reuse"}  # the protocol, no model
    assert graph["vla_pruner.layout"] == set()
    for model in ("vla_pruner.models.openvla.model", "vla_pruner.models.openvla_oft.model"):
        assert {"vla_pruner.engine", "vla_pruner.layout"} <= graph[model], model
