"""The evaluation harness: Hydra entry point, LIBERO wrapper, rollout loop, result store, reports."""
try:
    # Triton (torch's kernel compiler, pulled in by transformers' model code) crashes the process when its
    # native library loads after robosuite's: load it first, whatever a command imports later.
    import triton  # noqa: F401
except ImportError:  # CPU-only torch builds come without it
    pass
