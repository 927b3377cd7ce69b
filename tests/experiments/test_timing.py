import pytest

from attnprune.experiments.timing import fit_power_law, median_seconds


def test_power_law_fit_recovers_the_exponent():
    x = [1.0, 2.0, 4.0, 8.0]
    a, c = fit_power_law(x, [3.0 * v**2.5 for v in x])
    assert a == pytest.approx(2.5) and c == pytest.approx(3.0)


def test_power_law_fit_needs_two_points():
    with pytest.raises(ValueError, match="x and y"):
        fit_power_law([1.0], [1.0])


def test_median_seconds_calls_the_function():
    calls = []
    assert median_seconds(lambda: calls.append(1), repeats=3, warmup=2) >= 0
    assert len(calls) == 5
