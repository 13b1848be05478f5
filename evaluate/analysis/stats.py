"""Success-rate statistics."""
from __future__ import annotations

import math

Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """95% Wilson score interval for a success rate; unlike the normal approximation it stays inside
    [0, 1] and is sensible at 0% or 100%, which LIBERO tasks often hit.

    The bounds are clamped to [0, 1] and to contain the observed rate: at k = 0 or k = n the closed form
    lands a rounding error away (e.g. 1e-18 above 0 for 0/3), which would put the rate outside its own
    interval and give plots negative error bars."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))
