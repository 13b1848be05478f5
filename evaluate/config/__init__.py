"""Typed configuration, by concern: schema.py (the schema Hydra checks, CONFIG_DIR), resolvers.py (the resolvers
configs/ uses, registered on import, and the pruner presets), hydra_io.py (Hydra's config repository, group options,
one-line messages), checks.py (the checks Hydra cannot express: `validate`), identity.py (a run's identity).
Importing this package registers the schema and the resolvers; its names are re-exported here.
"""
from evaluate.config.schema import (
    CONFIG_DIR, DEVICE_PATTERN, SAMPLED_EPISODES_MAX, EvalConfig, PolicyConfig, SuiteConfig,
)
from evaluate.config.hydra_io import check_group_overrides, compose_each_point_once, group_choices, hydra_error_line
from evaluate.config.resolvers import group_file, model_default, pruner_presets, pruner_tag
from evaluate.config.checks import (
    build_checked_pruner, check_action_noise, check_device_available, check_keep, check_known_keys,
    check_unused_settings, default_settings, select_tasks, take_checked_pruner, validate,
)
from evaluate.config.identity import NON_IDENTITY_FIELDS, PROJECT_PATH, local, portable, run_identity
from evaluate.errors import ConfigError

__all__ = [
    "CONFIG_DIR", "DEVICE_PATTERN", "SAMPLED_EPISODES_MAX", "EvalConfig", "PolicyConfig", "SuiteConfig",
    "check_group_overrides", "compose_each_point_once", "group_choices", "hydra_error_line", "group_file", "model_default", "pruner_presets",
    "pruner_tag", "build_checked_pruner", "check_action_noise", "check_device_available", "check_keep",
    "check_known_keys", "check_unused_settings", "default_settings", "select_tasks", "take_checked_pruner", "validate",
    "NON_IDENTITY_FIELDS", "PROJECT_PATH", "local", "portable", "run_identity", "ConfigError",
]
