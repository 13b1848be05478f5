"""Success-rate statistics: which episodes count, and the 95% Wilson interval. The run summary
(evaluate/summary.py) and the report's tables (analysis/report.py) both count success here."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

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


@dataclass(frozen=True)
class Success:
    episodes: int  # attempted
    successes: int

    def rate(self, scale: float = 1.0) -> float:
        """scale * successes / episodes (scale 100: percent); NaN without an attempted episode."""
        return scale * self.successes / self.episodes if self.episodes else math.nan

    def ci95(self, scale: float = 1.0) -> tuple[float, float]:
        low, high = wilson_interval(self.successes, self.episodes)
        return scale * low, scale * high


def attempted(episodes: pd.DataFrame) -> pd.DataFrame:
    """The episode records (rows with `status`, `success`) that count: a skipped episode (a task the policy
    cannot attempt) is not attempted."""
    return episodes[episodes.status != "skipped"]


def success_of(episodes: pd.DataFrame) -> Success:
    tried = attempted(episodes)
    return Success(episodes=len(tried), successes=int(tried.success.sum()))


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value for paired successes: under "no difference" each discordant pair (one
    succeeded, the other not) goes either way with probability 1/2, so the smaller count is binomial(n, 1/2).
    Exact, since LIBERO's discordant counts are small; 1.0 without a discordant pair."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_first, only_second) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
