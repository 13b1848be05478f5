"""The pi0 family's record: two valid cameras in a bidirectional prefix, an action expert over its cache."""
from vla_pruner.families import ModelFamily
from vla_pruner.models.pi0.cost import pi0_cost

FAMILY = ModelFamily(
    name="pi0",
    num_images=2,  # the valid cameras (agent view, wrist): the empty third slot is never visual budget
    cost=pi0_cost,
    model_pruner_defaults={"pi0_tiny": {"prune_layer": 2}},  # the seeded pi0_tiny's VLM has 3 layers
    paper_table="table4",
)
