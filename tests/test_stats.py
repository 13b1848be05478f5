from evaluate.analysis.stats import wilson_interval


def test_wilson_interval_known_values():
    # Hand-computed: p=0.5, n=100 -> 0.5 +- 0.0962 (Wilson, z=1.96).
    lo, hi = wilson_interval(50, 100)
    assert abs(lo - 0.40383) < 1e-4 and abs(hi - 0.59617) < 1e-4
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and abs(hi - 0.27753) < 1e-4
    lo, hi = wilson_interval(10, 10)
    assert abs(lo - 0.72247) < 1e-4 and abs(hi - 1.0) < 1e-12


def test_wilson_interval_no_data_is_uninformative():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_holds_the_rate_at_zero_and_all_successes():
    """At k = 0 and k = n the closed form misses the rate by a rounding error for many n (0/3, 10/10, ...);
    the interval must still contain it exactly, or plots get negative error bars."""
    for n in range(1, 501):
        lo, hi = wilson_interval(0, n)
        assert lo == 0.0 and 0.0 < hi <= 1.0, n
        lo, hi = wilson_interval(n, n)
        assert 0.0 <= lo < 1.0 and hi == 1.0, n
        # and as the report scales them: rate minus bound never negative
        assert 100 * 0 / n - 100 * wilson_interval(0, n)[0] >= 0
        assert 100 * wilson_interval(n, n)[1] - 100 * n / n >= 0


def test_wilson_interval_contains_the_rate_for_every_count():
    for n in (1, 2, 7, 50, 499, 500):
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n)
