"""The evaluation harness: Hydra entry point, LIBERO wrapper, rollout loop, result store, reports."""
