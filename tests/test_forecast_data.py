"""Daily series: the real CTA file, any CSV, the synthetic series, date splits and windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, error_line, run_cli

from rnnforge.models import get_spec
from rnnforge.models.forecast import naive_forecast, train_targets
from rnnforge.models.resolve import resolve_config
from rnnforge.pipeline import timeseries

CTA_DIR = SHARED_DATA / "cta_ridership"
needs_cta = pytest.mark.skipif(not CTA_DIR.is_dir(), reason="needs ../shared/data/cta_ridership")


@needs_cta
def test_real_cta_file_drops_duplicates_and_is_complete():
    rail = timeseries.load_cta(str(CTA_DIR), "rail")
    assert len(rail) == 6725  # 6,787 rows, 62 exact duplicates
    assert rail.index[0] == pd.Timestamp("2001-01-01") and rail.index[-1] == pd.Timestamp("2019-05-31")
    assert rail.index.is_monotonic_increasing and rail.index.freq == "D"
    assert rail[pd.Timestamp("2001-01-02")] == 501952
    total = timeseries.load_cta(str(CTA_DIR), "total")
    bus = timeseries.load_cta(str(CTA_DIR / timeseries.CTA_FILE_NAME), "bus")
    np.testing.assert_allclose(total.to_numpy(), rail.to_numpy() + bus.to_numpy())


@needs_cta
def test_cta_splits_follow_the_dates_and_report_an_empty_test_split():
    config = resolve_config("forecast", {"dataset": "cta_ridership", "data_dir": str(CTA_DIR), "covariates": "none"})
    data = get_spec("forecast").load_data(config)
    # 2016-2018 has 1,096 days, Jan-May 2019 151: windows of 56 + 7 days fit 1,034 and 89 times.
    assert data.num_examples("train") == 1096 - 63 + 1 and data.num_examples("valid") == 151 - 63 + 1
    assert data.num_examples("test") == 0 and data.evaluation_split() == "valid"
    assert str(data.dates["valid"][0]) == "2019-02-26"  # first target day: Jan 1 + 56 days
    x, y = data.splits["valid"]
    assert x.shape == (89, 56, 1) and y.shape == (89, 7) and x.dtype == np.float32
    rail = timeseries.load_cta(str(CTA_DIR))
    assert y[0, 0] == rail[pd.Timestamp("2019-02-26")] and x[0, 0, 0] == rail[pd.Timestamp("2019-01-01")]
    assert data.info["window"] == 56 and data.info["horizon"] == 7 and data.info["mean"] > 1e5


@needs_cta
def test_naive_baseline_is_last_week_on_the_same_windows():
    """The baseline MAE equals pandas' own |value - value 7 days earlier| over the same target days."""
    config = resolve_config("forecast", {"dataset": "cta_ridership", "data_dir": str(CTA_DIR)})
    spec = get_spec("forecast")
    data = spec.load_data(config)
    x, y = data.splits["valid"]
    scores = spec.score(x, y, y + 1000.0, data.info)
    assert scores["mae"] == pytest.approx(1000.0) and scores["mae_d+3"] == pytest.approx(1000.0)
    rail = timeseries.load_cta(str(CTA_DIR))
    weekly_error = (rail - rail.shift(7)).abs()
    expected = np.mean(
        [[weekly_error[pd.Timestamp(start) + pd.Timedelta(days=d)] for d in range(7)] for start in data.dates["valid"]]
    )
    assert scores["naive_mae"] == pytest.approx(expected)
    assert scores["mae_vs_naive"] == pytest.approx(1000.0 / expected)
    assert 35_000 < scores["naive_mae"] < 45_000  # Géron's figure for Mar-May 2019: 42,143


def test_windows_and_seq2seq_targets():
    series = pd.Series(np.arange(20, dtype=float), index=pd.date_range("2020-01-01", periods=20))
    x, y, starts = timeseries.windows(series, window=8, horizon=3)
    assert x.shape == (10, 8, 1) and y.shape == (10, 3)
    np.testing.assert_array_equal(x[4, :, 0], np.arange(4, 12))
    np.testing.assert_array_equal(y[4], [12, 13, 14])
    assert str(starts[0]) == "2020-01-09"
    targets = train_targets(x, y, {"horizon": 3, "mean": 0.0, "std": 1.0})
    assert targets.shape == (10, 8, 3)
    np.testing.assert_array_equal(targets[4, 0], [5, 6, 7])  # step 0 of window 4 (value 4) targets 5, 6, 7
    np.testing.assert_array_equal(targets[4, -1], [12, 13, 14])  # the last step targets y
    np.testing.assert_array_equal(naive_forecast(x, 3)[4], [5, 6, 7])  # 7 days before 12, 13, 14
    short = timeseries.windows(series[:10], window=8, horizon=3)
    assert short[0].shape == (0, 8, 1) and short[1].shape == (0, 3)


def test_synthetic_series_is_deterministic_and_weekly():
    a, b = timeseries.synthetic_series(seed=0), timeseries.synthetic_series(seed=0)
    pd.testing.assert_series_equal(a, b)
    assert not a.equals(timeseries.synthetic_series(seed=1))
    by_weekday = a.groupby(a.index.dayofweek).mean()
    assert by_weekday[6] < 0.6 * by_weekday[2]  # Sundays are quiet
    assert (a >= 0).all() and a.index.freq == "D"


def test_missing_days_can_be_interpolated(tmp_path):
    csv = tmp_path / "gap.csv"
    csv.write_text("date,value\n2020-01-01,10\n2020-01-02,20\n2020-01-04,40\n")
    filled = timeseries.read_daily_csv(csv, "date", "value", fill_missing="interpolate")
    assert filled.tolist() == [10, 20, 30, 40]


def _csv(tmp_path, text: str):
    path = tmp_path / "series.csv"
    path.write_text(text)
    return path


GOOD = "date,value\n" + "".join(f"2020-01-{d:02d},{100 + d}\n" for d in range(1, 29))


@pytest.mark.parametrize(
    "text, extra, expected",
    [
        ("when,value\n2020-01-01,1\n", [], "has no column 'date' (--date-column)"),
        ("date,riders\n2020-01-01,1\n", [], "has no column 'value' (--value-column)"),
        ("date,value\n2020-01-01,1\nyesterday,2\n", [], "line 3: cannot parse date 'yesterday'"),
        ("date,value\n2020-01-01,1\n2020-01-02,-5\n", [], "line 3: value '-5' is not a non-negative number"),
        ("date,value\n2020-01-01,1\n2020-01-02,\n", [], "line 3: value '' is not a non-negative number"),
        ("date,value\n2020-01-01,1\n2020-01-02,nan\n", [], "line 3: value 'nan' is not a non-negative number"),
        ("date,value\n2020-01-01,1\n2020-01-01,2\n", [], "2020-01-01 appears with different value values"),
        ("date,value\n2020-01-01,1\n2020-01-03,2\n", [], "1 missing day(s), first 2020-01-02"),
        ("date,value\n", [], "has no data rows"),
        (GOOD, [], "the series has 28 days, fewer than --window 56 + --horizon 7"),
        (GOOD, ["--window", "3"], "--window must be at least 7"),
        (GOOD, ["--window", "14", "--horizon", "0"], "--horizon must be between 1 and 7"),
        (GOOD, ["--window", "14"], "no training windows between 2016-01-01 and 2018-12-31"),
    ],
)
def test_bad_series_gets_one_line(tmp_path, text, extra, expected):
    path = _csv(tmp_path, text)
    result = run_cli("train", "forecast", "--dataset", "csv", "--data-dir", path, "--run-dir", tmp_path / "run", *extra)
    line = error_line(result)
    assert expected in line
    if "line" in expected or "column" in expected or "missing" in expected:
        assert str(path) in line
    assert not (tmp_path / "run").exists()


def test_missing_cta_file_and_foreign_option(tmp_path):
    line = error_line(run_cli("train", "forecast", "--dataset", "cta_ridership", "--data-dir", tmp_path))
    assert f"{tmp_path / timeseries.CTA_FILE_NAME} does not exist" in line
    assert "--window does not apply to task 'sketch'" in error_line(run_cli("train", "sketch", "--window", "10"))
