from evaluate.stats import wilson_interval


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
