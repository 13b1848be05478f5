"""Built-in policies; importing this package registers them in `evaluate.policy.POLICIES`."""
from evaluate.policies import noop, scripted, vla  # noqa: F401
