"""`stockgym forecast train | eval | walk-forward` end to end through `stockgym.cli.main`."""

from __future__ import annotations

import json

import pytest

# the shared autouse fixtures: one torch thread; MPLCONFIGDIR, cache dir and cwd in tmp
from test_forecasters import isolated  # noqa: F401

from stockgym.cli import main

SYNTH = [
    "--symbol",
    "X",
    "--source",
    "synthetic",
    "--kind",
    "edge",
    "--edge",
    "0.3",
    "--n-days",
    "500",
]
SMALL = [
    "--model",
    "mlp",
    "--window",
    "5",
    "--hidden-size",
    "8",
    "--num-layers",
    "1",
    "--epochs",
    "3",
    "--patience",
    "2",
    "--no-progress",
]


def test_train_then_eval(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["forecast", "train", *SYNTH, *SMALL, "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{metrics['model']['rmse']:.6g}" in out
    for word in ("naive", "linear", "skill", "checkpoint:", "plots:", "tensorboard:", str(run)):
        assert word in out
    assert (run / "plots" / "predictions.png").is_file()
    assert (run / "checkpoint" / "model.pt").is_file()
    for key in ("mase", "rmsse", "ic", "rank_ic", "icir", "dm_pvalue", "auc", "accuracy"):
        assert key in metrics["model"], key
    assert 0 <= metrics["model"]["dm_pvalue"] <= 1 and metrics["model"]["auc"] is None
    assert metrics["windows"]["count"] == 12  # the default rolling-origin windows
    assert main(["forecast", "eval", str(run)]) == 0
    again = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith(("model ", "naive ", "linear "))]
    assert table and all(line in again for line in table)  # same numbers as at training
    assert "12 rolling-origin windows" in again
    assert main(["forecast", "eval", str(run), "--windows", "4"]) == 0
    assert "4 rolling-origin windows" in capsys.readouterr().out


def test_train_from_config_file_with_flag_override(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {"model": "cnn", "window": 6, "hidden_size": 4, "epochs": 2, "target": "direction"}
        )
    )
    run = tmp_path / "run"
    args = [
        "forecast",
        "train",
        *SYNTH,
        "--config",
        str(cfg),
        "--epochs",
        "1",
        "--no-progress",
        "--no-plots",
        "--no-tensorboard",
        "--run-dir",
        str(run),
    ]
    assert main(args) == 0
    record = json.loads((run / "config.json").read_text())["config"]
    assert (record["model"], record["window"], record["target"], record["epochs"]) == (
        "cnn",
        6,
        "direction",
        1,
    )
    assert not (run / "plots").exists() and not (run / "tensorboard").exists()


def test_walk_forward(tmp_path, capsys):
    run = tmp_path / "wf"
    args = [
        "forecast",
        "walk-forward",
        *SYNTH,
        *SMALL,
        "--min-train",
        "150",
        "--refit-every",
        "100",
        "--run-dir",
        str(run),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 refits" in out and "naive" in out and str(run / "forecasts.csv") in out
    for name in (
        "config.json",
        "metrics.json",
        "refits.json",
        "forecasts.csv",
        "plots/forecasts.png",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    windows = metrics["windows"]["per_window"]  # one rolling-origin window per refit
    assert len(windows) == 4 and sum(w["samples"] for w in windows) == metrics["period"]["samples"]
    assert metrics["scale"]["samples"] > 0 and metrics["model"]["mase"] > 0
    header = (run / "forecasts.csv").read_text().splitlines()[0]
    assert header == "date,forecast,target_date,actual,naive"
    assert main([*args[:-1], str(tmp_path / "wf2")]) == 0  # second time: from the cache
    assert "(from cache)" in capsys.readouterr().out


def test_default_run_dir_under_runs(tmp_path, capsys):
    assert main(["forecast", "train", *SYNTH, *SMALL, "--no-plots", "--no-tensorboard"]) == 0
    runs = list((tmp_path / "runs" / "forecast").iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.json").is_file()


def _assert_error(capsys, match: str) -> None:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and match in captured.err, captured.err
    assert "Traceback" not in captured.err


def test_bad_input_per_subcommand(tmp_path, capsys):
    run = tmp_path / "bad"
    assert (
        main(["forecast", "train", *SYNTH, *SMALL, "--window", "600", "--run-dir", str(run)]) == 2
    )
    _assert_error(capsys, "window=600")
    assert not run.exists() and not list(tmp_path.glob(".bad*"))  # nothing half-written

    assert main(["forecast", "eval", str(tmp_path / "missing")]) == 2
    _assert_error(capsys, "does not exist")
    (tmp_path / "empty").mkdir()
    assert main(["forecast", "eval", str(tmp_path / "empty")]) == 2
    _assert_error(capsys, "config.json")

    assert (
        main(
            [
                "forecast",
                "walk-forward",
                *SYNTH,
                *SMALL,
                "--min-train",
                "5000",
                "--run-dir",
                str(run),
            ]
        )
        == 2
    )
    _assert_error(capsys, "min_train")
    assert not run.exists()

    assert (
        main(
            [
                "forecast",
                "train",
                "--symbol",
                "AAPL",
                "--source",
                "sample",
                *SMALL,
                "--kind",
                "edge",
            ]
        )
        == 2
    )
    _assert_error(capsys, "--source synthetic")

    with pytest.raises(SystemExit) as exc:  # argparse rejects an unknown model name
        main(["forecast", "train", *SYNTH, "--model", "nosuch"])
    assert exc.value.code == 2
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err


def test_cli_model_names_are_the_models():
    from stockgym.cli.forecast import MODEL_NAMES
    from stockgym.forecasters import MODELS

    assert sorted(MODEL_NAMES) == sorted(MODELS)
