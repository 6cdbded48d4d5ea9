"""The forecaster's known-future covariates: day types of the past and forecast days.

Codes from the CTA file's ``day_type``, from a CSV column, or from the calendar plus a holidays
file; the three-input model (``series``, ``past_day_type``, ``future_day_type``) through ONNX
export, parity and bench, and the refusals that name file and line.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pandas as pd
import pytest
from conftest import SHARED_DATA, copy_run, error_line, make_run_dir, run_cli

from rnnforge.core.errors import UserError
from rnnforge.models import get_spec
from rnnforge.models.resolve import resolve_config
from rnnforge.pipeline import timeseries

CTA_DIR = SHARED_DATA / "cta_ridership"
needs_cta = pytest.mark.skipif(not CTA_DIR.is_dir(), reason="needs ../shared/data/cta_ridership")
DAYS = pd.date_range("2016-01-01", "2019-06-30", freq="D")


def _series_csv(tmp_path, codes=None, extra_rows: str = ""):
    """A daily CSV 2016-01-01..2019-06-30 with ``value`` and, if given, a ``kind`` code per day."""
    frame = pd.DataFrame({"date": DAYS.strftime("%Y-%m-%d"), "value": 1000 + 10 * (DAYS.dayofweek < 5)})
    if codes is not None:
        frame["kind"] = codes
    path = tmp_path / "series.csv"
    path.write_text(frame.to_csv(index=False) + extra_rows)
    return path


def _load(**options):
    return get_spec("forecast").load_data(resolve_config("forecast", options))


@needs_cta
def test_cta_day_types_are_the_files_codes_of_past_and_future_days():
    data = _load(dataset="cta_ridership", data_dir=str(CTA_DIR))
    assert data.info["day_types"] == ["W", "A", "U"] and data.info["inputs"] == [
        "series",
        "past_day_type",
        "future_day_type",
    ]
    x, y = data.splits["valid"]
    assert x["past_day_type"].dtype == np.int64 and x["past_day_type"].shape == (89, 56)
    assert x["future_day_type"].shape == (89, 7) and x["series"].shape == (89, 56, 1)
    table = timeseries.cta_day_types(str(CTA_DIR))
    first = pd.Timestamp(data.dates["valid"][0])  # 2019-02-26, first target day of window 0
    codes = {"W": 0, "A": 1, "U": 2}
    assert list(x["future_day_type"][0]) == [codes[table.at[first + pd.Timedelta(days=d), "code"]] for d in range(7)]
    assert x["past_day_type"][0, 0] == codes[table.at[pd.Timestamp("2019-01-01"), "code"]] == 2  # New Year: U
    assert str(data.dates["valid"][-1]) == "2019-05-25"  # the last window forecasts May 25-31
    assert list(x["future_day_type"][-1]) == [1, 2, 2, 0, 0, 0, 0]  # Sat, Sun, Memorial Day (U), Tue..Fri
    np.testing.assert_array_equal(
        x["series"], _load(dataset="cta_ridership", data_dir=str(CTA_DIR), covariates="none").splits["valid"][0]
    )


def test_calendar_codes_and_holidays_file(tmp_path):
    holidays = tmp_path / "holidays.txt"
    holidays.write_text("# US holidays\n2019-05-27\n\n2019-07-04  # Independence Day\n")
    assert timeseries.read_holidays(holidays) == {np.datetime64("2019-05-27"), np.datetime64("2019-07-04")}
    days = pd.date_range("2019-05-24", periods=5)  # Fri, Sat, Sun, Mon (Memorial Day), Tue
    np.testing.assert_array_equal(timeseries.calendar_day_types(days), [0, 1, 2, 0, 0])
    np.testing.assert_array_equal(
        timeseries.calendar_day_types(days, timeseries.read_holidays(holidays)), [0, 1, 2, 2, 0]
    )
    data = _load(dataset="csv", data_dir=str(_series_csv(tmp_path)), holidays=str(holidays))
    assert data.info["day_types"] == ["W", "A", "U"]
    x = data.splits["valid"][0]
    assert str(data.dates["valid"][-1]) == "2019-05-25"
    assert list(x["future_day_type"][-1]) == [1, 2, 2, 0, 0, 0, 0]  # Memorial Day from the holidays file


def test_day_type_column_codes_in_order_of_first_appearance(tmp_path):
    codes = np.where(DAYS.dayofweek < 5, "work", "rest")
    data = _load(dataset="csv", data_dir=str(_series_csv(tmp_path, codes)), day_type_column="kind")
    assert data.info["day_types"] == ["work", "rest"]  # 2016-01-01 is a Friday
    x = data.splits["train"][0]
    np.testing.assert_array_equal(x["past_day_type"][0, :4], [0, 1, 1, 0])


@pytest.mark.parametrize(
    "codes_at, extra_rows, expected",
    [
        (
            {"2019-03-04": "strike"},
            "",
            "line {line}: kind 'strike' is not one of the codes of the training days (W, A)",
        ),
        ({"2017-03-04": ""}, "", "line {line}: no day-type code"),
        ({}, "2016-01-05,1010,A\n", "2016-01-05 has two kind codes"),
    ],
    ids=["unseen_code", "missing_code", "two_codes"],
)
def test_bad_day_type_column_names_file_and_line(tmp_path, codes_at, extra_rows, expected):
    codes = pd.Series(np.where(DAYS.dayofweek < 5, "W", "A"), index=DAYS)
    for day, code in codes_at.items():
        codes[pd.Timestamp(day)] = code
    path = _series_csv(tmp_path, codes.to_numpy(), extra_rows)
    line_number = 2 + DAYS.get_loc(pd.Timestamp(next(iter(codes_at)))) if codes_at else 0
    with pytest.raises(UserError) as error:
        _load(dataset="csv", data_dir=str(path), day_type_column="kind")
    message = str(error.value)
    assert message.startswith(str(path)) and expected.format(line=line_number) in message


def test_bad_holidays_line_and_missing_column_through_the_cli(tmp_path):
    path = _series_csv(tmp_path)
    holidays = tmp_path / "holidays.txt"
    holidays.write_text("2019-05-27\nMemorial Day\n")
    run = tmp_path / "run"
    line = error_line(
        run_cli("train", "forecast", "--dataset", "csv", "--data-dir", path, "--holidays", holidays, "--run-dir", run)
    )
    assert f"{holidays} line 2: 'Memorial Day' is not a date (expected YYYY-MM-DD)" in line
    line = error_line(
        run_cli(
            "train", "forecast", "--dataset", "csv", "--data-dir", path, "--day-type-column", "kind", "--run-dir", run
        )
    )
    assert f"{path} has no column 'kind' (--day-type-column)" in line
    assert not run.exists()
    line = error_line(
        run_cli(
            "train", "forecast", "--dataset", "csv", "--data-dir", path, "--holidays", holidays, "--covariates", "none"
        )
    )
    assert "--holidays gives day types, which --covariates none leaves out" in line
    line = error_line(run_cli("train", "forecast", "--covariates", "weather"))
    assert "'--covariates'" in line and "'day_type', 'none'" in line


def test_covariates_none_is_the_univariate_model():
    data = _load(covariates="none")
    assert "day_types" not in data.info and data.info["inputs"] == ["series"]
    x = data.splits["valid"][0]
    assert isinstance(x, np.ndarray) and x.shape[1:] == (56, 1)
    model = get_spec("forecast").build_model(resolve_config("forecast", {"covariates": "none"}), data.info)
    assert [t.name.split(":")[0] for t in model.inputs] == ["series"]


def test_serving_model_with_covariates_is_the_last_step_of_the_training_model():
    from tensorflow import keras

    spec = get_spec("forecast")
    config = resolve_config("forecast", {"ensemble": 1})  # several members: test_forecast_ensemble.py
    data = spec.load_data(config)
    keras.utils.set_random_seed(1)
    trained = spec.build_model(config, data.info)
    served = spec.to_serving(trained, config, data.info)
    x = {name: a[:5] for name, a in data.splits["valid"][0].items()}
    expected = trained.predict(x, verbose=0)[:, -1, :] * data.info["std"] + data.info["mean"]
    np.testing.assert_allclose(served.predict(x, verbose=0), expected, rtol=1e-4)
    # the day types matter: a Sunday forecast differs from a weekday one
    sunday = {**x, "future_day_type": np.full_like(x["future_day_type"], 2)}
    assert np.abs(served.predict(sunday, verbose=0) - served.predict(x, verbose=0)).max() > 0


@pytest.mark.slow
def test_three_input_onnx_export_parity_and_metadata(forecast_run):
    import onnxruntime as ort
    from tensorflow import keras

    model = onnx.load(str(forecast_run / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Loop", "Scan"} and {"LSTM", "Gather"} <= ops
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == ["series", "past_day_type", "future_day_type"]
    assert inputs["past_day_type"].elem_type == onnx.TensorProto.INT64 == inputs["future_day_type"].elem_type
    assert [d.dim_param or d.dim_value for d in inputs["past_day_type"].shape.dim] == ["batch", 56]
    assert [d.dim_param or d.dim_value for d in inputs["future_day_type"].shape.dim] == ["batch", 7]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["rnnforge.day_types"]) == ["W", "A", "U"]
    assert [i["name"] for i in json.loads(meta["rnnforge.inputs"])] == list(inputs)

    config = json.loads((forecast_run / "config.json").read_text())
    x = {name: a[:16] for name, a in get_spec("forecast").load_data(config).splits["test"][0].items()}
    session = ort.InferenceSession(str(forecast_run / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, x)[0]
    tf_out = keras.models.load_model(forecast_run / "model.keras", compile=False).predict(x, verbose=0)
    np.testing.assert_allclose(onnx_out, tf_out, atol=1.0, rtol=1e-5)
    parity = json.loads((forecast_run / "parity.json").read_text())
    assert parity["passed"] and parity["outputs"]["forecast"]["max_abs_diff"] <= 1.0


def test_eval_set_keeps_the_inputs_by_name_and_bench_refuses_unknown_codes(forecast_run, tmp_path):
    from rnnforge.export.eval_set import load_eval_set

    eval_set = load_eval_set(forecast_run / "eval.npz", "forecast")
    assert list(eval_set.x) == ["series", "past_day_type", "future_day_type"]
    assert [r["codes"] for r in eval_set.meta["inputs"][1:]] == [["W", "A", "U"]] * 2
    run = copy_run(forecast_run, tmp_path / "forecast")
    with np.load(run / "eval.npz") as data:
        arrays = dict(data)
    arrays["x.future_day_type"][3, 2] = 5
    np.savez_compressed(run / "eval.npz", **arrays)
    line = error_line(run_cli("bench", run, "--runs", "10"))
    assert f"{run / 'eval.npz'}: x.future_day_type holds code 5, outside the model's codes 0..2" in line
    assert not (run / "bench" / "bench.json").exists()


@pytest.mark.slow
def test_univariate_run_exports_and_benches_one_input(tmp_path):
    """``--covariates none``: today's model, one ``series`` input, through export and bench."""
    options = {"covariates": "none", "ensemble": 1}  # several members: test_forecast_ensemble.py
    run = make_run_dir(tmp_path / "forecast", task="forecast", epochs_steps=2, config_overrides=options)
    assert run_cli("export", "onnx", run).returncode == 0
    model = onnx.load(str(run / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["series"]
    assert "rnnforge.day_types" not in {p.key for p in model.metadata_props}
    fast = ("--batch-sizes", "1", "--warmup", "1", "--runs", "10", "--max-seconds", "0.2", "--tf-baseline", "none")
    result = run_cli("bench", run, *fast)
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "bench" / "bench.json").read_text())["accuracy"]["agreement"]["max_abs_diff"] < 1.0


@needs_cta
def test_forecast_png_shades_the_weekday_holidays_the_model_was_told():
    from rnnforge.models.forecast import weekday_holidays

    data = _load(dataset="cta_ridership", data_dir=str(CTA_DIR))
    x = data.splits["valid"][0]
    days = weekday_holidays(x, data.dates["valid"], data.info)
    assert list(days.astype(str)) == ["2019-05-27"]  # Memorial Day; Sundays are no weekday holidays
    assert not len(weekday_holidays(x["series"], data.dates["valid"], data.info))  # no covariates: none


@pytest.mark.slow
def test_fp16_and_int8_variants_take_the_three_inputs(forecast_run, tmp_path):
    """The variants' gates and bench run on the named inputs (calibration, parity, accuracy)."""
    run = copy_run(forecast_run, tmp_path / "forecast")
    result = run_cli("export", "onnx", run, "--fp16", "--int8")
    assert result.returncode == 0, result.stderr
    parity = json.loads((run / "parity.json").read_text())
    assert parity["fp16"]["passed"] and parity["int8"]["passed"]
    for variant in ("fp16", "int8"):
        model = onnx.load(str(run / f"model.{variant}.onnx"))
        assert [i.name for i in model.graph.input] == ["series", "past_day_type", "future_day_type"]
    result = run_cli(
        "bench",
        run,
        "--variants",
        "fp32,fp16,int8",
        "--batch-sizes",
        "1",
        "--warmup",
        "1",
        "--runs",
        "10",
        "--max-seconds",
        "0.2",
        "--tf-baseline",
        "none",
    )
    assert result.returncode == 0, result.stderr
    accuracy = json.loads((run / "bench" / "bench.json").read_text())["accuracy"]
    assert accuracy["onnxruntime"]["mae"] == pytest.approx(accuracy["tensorflow"]["mae"], rel=1e-5)
