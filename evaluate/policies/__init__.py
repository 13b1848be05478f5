"""Built-in policies; importing this package registers them in `evaluate.policy.POLICIES`."""
import importlib

for _module in ("noop", "openvla", "scripted"):
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as e:  # a policy module not yet present in this checkout
        if e.name != f"{__name__}.{_module}":
            raise
