"""`python -m evaluate [overrides]`: evaluate a policy on a LIBERO suite (Hydra app; see README)."""
from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig

from evaluate.config import ConfigError, check_group_overrides, validate
from evaluate.store import RunMismatch


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    from evaluate.policy import POLICIES
    import evaluate.policies  # noqa: F401  (fills POLICIES)
    from evaluate.runner import run

    try:
        validate(cfg, POLICIES)
        summary = run(cfg)
    except (ConfigError, RunMismatch) as e:
        sys.exit(f"error: {e}")
    print(json.dumps({k: summary[k] for k in ("run_dir", "episodes", "successes", "success_rate", "complete")}))


def cli() -> None:
    try:
        check_group_overrides(sys.argv[1:])
    except ConfigError as e:
        sys.exit(f"error: {e}")
    main()


if __name__ == "__main__":
    cli()
