"""Import this before anything loads MuJoCo (robosuite, LIBERO): it loads Triton first.

Triton (torch's kernel compiler, which transformers' model code pulls in) crashes the process (SIGSEGV) when its
native library loads after MuJoCo's: `import mujoco; import triton` segfaults, the other order does not. The
simulator modules (envs/libero.py, envs/libero_goals.py) import this first, and so does tests/conftest.py.
"""
try:
    import triton  # noqa: F401
except ImportError:  # CPU-only torch builds come without it
    pass
