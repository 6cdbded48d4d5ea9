"""``rnnforge train``'s options, declared once in ``TrainConfig``: generated help, checks, the
frozen config and its plain-data form. In-process and fast: nothing here imports TensorFlow."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from rnnforge.cli import cli, main, parse_train_args
from rnnforge.core.config import TrainConfig, declarations, parse_categories
from rnnforge.core.errors import UserError
from rnnforge.models import TASKS, get_spec
from rnnforge.models.resolve import defaults_per_task, resolve_config, task_defaults


def help_text(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # unwrapped: click wraps at the terminal's width


def test_help_shows_each_tasks_default_from_the_specs():
    text = help_text("train")
    assert (
        "--epochs INTEGER Maximum epochs (early stopping may end sooner). [default: sketch 15, forecast 80, video 40; at least 1; "
        "at most 100000 epochs (a bound on typos: no run here needs more than a few hundred)]" in text
    )
    assert (
        "--units INTEGER Units of each recurrent layer. [default: sketch 128, forecast 64, video 64; at least 1; "
        "at most 4096 (an LSTM layer of 4096 units holds 134M weights, 2 GB with Adam's state)]" in text
    )
    assert (
        "--workers N|MIN-MAX Ray Train workers; MIN-MAX: an elastic group (--min-workers). [default: 2; at least 1; "
        "at most 1024 (a bound on typos: every worker is a Ray actor with its own TensorFlow and data shard)]" in text
    )
    assert "--dropout FLOAT" in text and "[default: sketch 0.1, forecast 0.0, video 0.2; in [0, 1)]" in text
    assert "--rnn [lstm|gru] Recurrent cell (GRU uses reset_after=True). [default: lstm]" in text
    assert "--window INTEGER forecast: input days. [default: 56; at least 7; at most 3660 days" in text
    # (click may break "comma-separated" after its hyphen)
    assert "--categories TEXT sketch quickdraw, video ucf101: comma-" in text
    assert "separated categories to use. [default: all]" in text
    assert "--streaming / --in-memory sketch quickdraw:" in text
    assert "--dataset TEXT Dataset to train on. [default: synthetic]" in text
    assert "--data-seed" not in text  # declared for code and tests, not a CLI option
    # demo shows its own epochs (spec.demo_options over the task's defaults)
    assert "[default: sketch 12, forecast 40, video 16; at least 1; at most 100000" in help_text("demo")


def test_help_defaults_are_the_specs_values():
    for task in TASKS:
        spec = get_spec(task)
        for name, value in spec.defaults.items():
            assert defaults_per_task(name)[task] == value
        assert task_defaults(task)["dataset"] == spec.default_dataset
    assert defaults_per_task("epochs", demo=True) == {"sketch": 12, "forecast": 40, "video": 16}
    assert defaults_per_task("window") == {"forecast": 56}


def test_every_spec_default_is_a_declared_option_of_its_task():
    declared = declarations()
    for task in TASKS:
        for name in get_spec(task).defaults:
            assert name in declared and declared[name].applies_to(task), (task, name)


def test_forecast_ranges_match_the_naive_baseline():
    from rnnforge.models.forecast import SEASON

    assert declarations()["window"].minimum == SEASON and declarations()["horizon"].maximum == SEASON


@pytest.mark.parametrize(
    "task, options, expected",
    [
        ("sketch", {"workers": 0}, "--workers must be at least 1, got 0"),
        ("sketch", {"max_len": 0}, "--max-len must be at least 1, got 0"),
        ("sketch", {"patience": -1}, "--patience must be at least 0, got -1"),
        ("sketch", {"learning_rate": 0.0}, "--learning-rate must be positive, got 0.0"),
        ("sketch", {"dropout": 1.0}, "--dropout must be in [0, 1), got 1.0"),
        ("forecast", {"horizon": 8}, "--horizon must be between 1 and 7 days, got 8"),
        ("forecast", {"window": 3}, "--window must be at least 7 days (the naive baseline looks a week back), got 3"),
        ("sketch", {"rnn": "rnn2"}, "--rnn must be one of lstm, gru, got 'rnn2'"),
        ("video", {"dataset": "folder", "sampling": "every"}, "--sampling must be one of uniform, random, got 'every'"),
        ("sketch", {"mixed_precision": True}, "--mixed-precision needs GPU workers (--gpus-per-worker > 0)"),
        ("sketch", {"dataset": "imagenet"}, "unknown dataset 'imagenet' for task 'sketch' (--dataset): expected"),
        ("sketch", {"window": 10}, "--window does not apply to task 'sketch'"),
        ("forecast", {"categories": "a,b"}, "--categories does not apply to task 'forecast'"),
        ("sketch", {"epoch": 3}, "--epoch does not apply to task 'sketch'"),
        ("sketch", {"storage_path": "ftp://host/x"}, "--storage-path ftp://host/x: unsupported scheme ftp://"),
    ],
)
def test_resolve_config_refuses_bad_options(task, options, expected):
    with pytest.raises(UserError) as error:
        resolve_config(task, options)
    assert expected in str(error.value)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "sketch", "--window", "10"], "error: --window does not apply to task 'sketch'"),
        (["train", "video", "--max-len", "50"], "error: --max-len does not apply to task 'video'"),
        (["train", "forecast", "--horizon", "0"], "error: --horizon must be between 1 and 7 days, got 0"),
        (["train", "sketch", "--rnn", "rnn2"], "'rnn2' is not one of 'lstm', 'gru'"),
        (["train", "sketch", "--epochs", "many"], "'many' is not a valid integer"),
    ],
)
def test_the_cli_refuses_with_one_line(capsys, args, expected):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_defaults_merge_declaration_spec_and_user():
    config = resolve_config("forecast", {"epochs": 3, "units": None})  # None: not given
    assert config.epochs == 3 and config.units == 64 and config.window == 56  # user, spec, spec
    assert config.workers == 2 and config.lr_schedule == "cosine"  # the declaration's
    assert config.max_len is None and config.frames is None and config.skip_bad_records is None  # not forecast's
    assert resolve_config("sketch", {}).skip_bad_records is None  # quickdraw's only
    sketch = resolve_config("sketch", {"dataset": "quickdraw"})
    assert sketch.skip_bad_records is False and sketch.streaming is None and sketch.length_buckets == 1


def test_the_config_is_frozen_and_replace_checks_again():
    config = resolve_config("sketch", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3
    assert dataclasses.replace(config, epochs=3).epochs == 3 and config.epochs == 15
    with pytest.raises(UserError, match="--dropout must be in"):
        dataclasses.replace(config, dropout=1.5)
    assert hash(config) == hash(resolve_config("sketch", {}))  # load_data caches on it


def test_plain_data_round_trip_keeps_config_json_fields():
    config = resolve_config("sketch", {"dataset": "quickdraw", "categories": "cat,dog", "data_dir": "."})
    data = config.to_dict()
    assert data["task"] == "sketch" and data["categories"] == ["cat", "dog"] and data["epochs"] == 15
    assert "window" not in data and "frames" not in data and "tensorboard_dir" not in data
    assert set(data) == {"task"} | {n for n, o in declarations().items() if o.applies_to("sketch")}
    assert TrainConfig.from_dict(data) == config
    # a run dir's config.json: the data's info and the versions beside the fields
    assert TrainConfig.from_dict({**data, "info": {}, "num_examples": {}, "versions": {}}) == config


@pytest.mark.parametrize(
    "value, expected",
    [
        ("cat,dog", ("cat", "dog")),
        (" cat , dog ,, ", ("cat", "dog")),
        ("", None),
        (" , ", None),
        (None, None),
        (["cat", "dog"], ("cat", "dog")),  # config.json keeps a list
    ],
)
def test_categories_are_parsed_once(value, expected):
    assert parse_categories(value) == expected


def test_sketch_and_video_read_categories_alike():
    sketch = resolve_config("sketch", {"dataset": "quickdraw", "categories": "cat, dog"})
    video = resolve_config("video", {"dataset": "ucf101", "categories": "Archery, Basketball,"})
    assert sketch.categories == ("cat", "dog") and video.categories == ("Archery", "Basketball")
    assert resolve_config("video", {}).categories is None


def test_parse_train_args_is_what_the_command_trains_with():
    args = ["video", "--dataset", "ucf101", "--categories", "a,b", "--epochs", "2", "--run-dir", "x", "--overwrite"]
    config = parse_train_args(args)
    assert config == resolve_config("video", {"dataset": "ucf101", "categories": "a,b", "epochs": 2})
    assert parse_train_args(["sketch", "--dataset", "quickdraw", "--in-memory"]).streaming is False


def test_a_folder_video_run_records_no_difficulty():
    """Issue #27: an option of another dataset is unset, and config.json leaves it out."""
    config = resolve_config("video", {"dataset": "folder", "data_dir": "."})
    assert config.difficulty is None and "difficulty" not in config.to_dict()
    assert config.to_dict()["sampling"] == "uniform"
    assert resolve_config("video", {}).to_dict()["difficulty"] == "easy"


def test_credentials_are_redacted_from_any_text():
    from rnnforge.core.uris import redacted

    assert redacted("http://alice:pw@host:5000/x") == "http://***@host:5000/x"
    assert redacted("at https://tok@h/api?token=abc&x=1.") == "at https://***@h/api?token=***&x=1."
    assert redacted("s3://b/p?access_key=A&secret_key=S") == "s3://b/p?access_key=***&secret_key=***"
    assert (
        redacted("sqlite:////tmp/mlflow.db and alice@example.com") == "sqlite:////tmp/mlflow.db and alice@example.com"
    )
