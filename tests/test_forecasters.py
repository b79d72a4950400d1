"""Forecasters: modules, targets and windows, metrics, leak-free training, save/load, skill."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from stockgym.core import resolve_device
from stockgym.data import DataError, check_no_lookahead, load_prices
from stockgym.forecasters import (
    CNN,
    LSTM,
    MLP,
    MODELS,
    ForecastConfig,
    Forecaster,
    build_model,
    evaluate,
    format_table,
    score,
    train,
)
from stockgym.forecasters.data import build_inputs, make_windows, targets, valuation_close
from stockgym.forecasters.evaluation import (
    compare,
    directional_accuracy,
    mae,
    mape,
    naive_forecast,
    rmse,
    skill,
)
from stockgym.forecasters.training import _mean_loss, loss_function, prepare, resolve

TINY = dict(
    window=5,
    hidden_size=8,
    num_layers=1,
    dropout=0.0,
    epochs=3,
    patience=2,
    batch_size=64,
    plots=False,
    tensorboard=False,
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def edge_prices(n_days=600, seed=0, edge=0.3):
    return load_prices("X", source="synthetic", kind="edge", edge=edge, n_days=n_days, seed=seed)


def synth_config(tmp_path, name="run", n_days=600, **kw):
    opts = dict(kind="edge", edge=0.3, n_days=n_days, seed=0)
    fields = {**TINY, "model": "mlp", **kw}
    return ForecastConfig(
        symbol="X", source="synthetic", data_options=opts, run_dir=str(tmp_path / name), **fields
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small MLP run (plots and TensorBoard on), shared by the save/load tests."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPLCONFIGDIR", str(root / "mpl"))
        cfg = synth_config(root, epochs=4, plots=True, tensorboard=True)
        return train(cfg)


# ------------------------------------------------------------------------------ imports
@pytest.mark.parametrize("module", ["stockgym.forecasters", "stockgym.cli.forecast"])
def test_import_does_not_pull_in_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("window,n_features", [(7, 3), (30, 5)])
def test_encode_and_forward_shapes(name, window, n_features):
    model = build_model(name, n_features, window, hidden_size=12, num_layers=2, out_dim=2)
    x = torch.randn(4, window, n_features)
    z = model.encode(x)
    assert z.shape == (4, model.embed_dim) == (4, 12)
    out = model(x)
    assert out.shape == (4, 2)
    assert torch.equal(out, model.head(model.encode(x)))
    rebuilt = type(model)(**model.kwargs)  # kwargs are JSON-able and rebuild the module
    json.dumps(model.kwargs)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]


@pytest.mark.parametrize("cls", [MLP, CNN, LSTM])
def test_untrained_model_forecasts_exactly_zero(cls):
    model = cls(4, 9, hidden_size=8)
    assert torch.count_nonzero(model(torch.randn(5, 9, 4))) == 0


@pytest.mark.parametrize("cls", [MLP, CNN, LSTM])
def test_wrong_input_shape_names_expected_shape(cls):
    model = cls(4, 9, hidden_size=8)
    with pytest.raises(ValueError, match=r"window=9, n_features=4"):
        model.encode(torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match=r"got \(2, 9\)"):
        model(torch.randn(2, 9))


def test_cnn_flatten_size_is_computed_and_short_window_rejected():
    assert CNN(3, 10, hidden_size=4, num_layers=2, kernel_size=3).flat_size == 4 * (10 - 4)
    assert CNN(3, 5, hidden_size=4, num_layers=2, kernel_size=3).flat_size == 4 * 1
    with pytest.raises(ValueError, match="window=4 is too short"):
        CNN(3, 4, hidden_size=4, num_layers=2, kernel_size=3)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown model 'rnn'"):
        build_model("rnn", 3, 5)
    with pytest.raises(ValueError, match="hidden_size"):
        MLP(3, 5, hidden_size=0)
    with pytest.raises(ValueError, match="dropout"):
        LSTM(3, 5, dropout=1.5)


# ------------------------------------------------------------------------ data, targets
def test_targets_hand_computed():
    c = np.array([100.0, 110.0, 99.0, 99.0])
    np.testing.assert_allclose(targets(c, "log_return", 1)[:3], [math.log(1.1), math.log(0.9), 0.0])
    assert np.isnan(targets(c, "log_return", 1)[3])
    np.testing.assert_array_equal(targets(c, "direction", 1)[:3], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(targets(c, "close", 2)[:2], [99.0, 99.0])
    assert np.isnan(targets(c, "close", 2)[2:]).all()
    with pytest.raises(ValueError, match="horizon"):
        targets(c, "close", 0)
    with pytest.raises(ValueError, match="unknown target"):
        targets(c, "price", 1)


def test_windows_content_dates_and_targets():
    idx = pd.bdate_range("2021-01-04", periods=6, name="date")
    scaled = pd.DataFrame({"a": np.arange(6.0), "b": 10 + np.arange(6.0)}, index=idx)
    close = pd.Series([1.0, 2.0, 4.0, 8.0, 16.0, 32.0], index=idx)
    w = make_windows(scaled, close, window=3, horizon=2, target="log_return")
    assert w.x.shape == (4, 3, 2) and w.x.dtype == np.float32
    np.testing.assert_array_equal(w.x[0], [[0, 10], [1, 11], [2, 12]])  # oldest row first
    assert list(w.dates) == list(idx[2:])
    assert list(w.target_dates[:2]) == [idx[4], idx[5]] and w.target_dates[2:].isna().all()
    np.testing.assert_allclose(w.y[:2], [math.log(4.0), math.log(4.0)])
    np.testing.assert_array_equal(w.base_close, [4.0, 8.0, 16.0, 32.0])
    assert len(w.known()) == 2
    part = w.between(idx[2], idx[4])  # decision >= idx[2] and target <= idx[4]
    assert list(part.dates) == [idx[2]]
    with pytest.raises(DataError, match="window=7 is longer than the 6 rows"):
        make_windows(scaled, close, window=7, horizon=1, target="log_return")


def test_inputs_raw_fields_carry_prices_over_halted_days():
    p = edge_prices(60)
    p.loc[p.index[30], ["volume", "tradable"]] = [0.0, False]
    p.loc[p.index[30], "close"] = 1e6  # a bogus close on a halted day is never used
    inputs = build_inputs(p, ["close", "volume", "log_return"])
    assert list(inputs.columns) == ["close", "volume", "log_return"]
    assert inputs.loc[p.index[30], "close"] == p["close"].iloc[29]
    assert valuation_close(p).iloc[30] == p["close"].iloc[29]
    assert inputs.loc[p.index[30], "log_return"] == 0.0
    with pytest.raises(DataError, match="unknown feature"):
        build_inputs(p, ["nope"])


# ---------------------------------------------------------------------------- metrics
def test_metrics_hand_computed():
    y, p = np.array([1.0, -2.0, 3.0, 0.0]), np.array([2.0, -2.0, 1.0, 1.0])
    assert rmse(y, p) == pytest.approx(math.sqrt((1 + 0 + 4 + 1) / 4))
    assert mae(y, p) == pytest.approx(1.0)
    assert mape([100.0, 200.0], [110.0, 150.0]) == pytest.approx(100 * (0.1 + 0.25) / 2)
    # up/up, down/down, up/up, flat(not up)/up -> 3 of 4
    assert directional_accuracy(y, p) == pytest.approx(0.75)
    assert skill(0.9, 1.0) == pytest.approx(0.1)
    assert math.isnan(skill(1.0, 0.0))
    with pytest.raises(ValueError, match="MAPE"):
        mape([0.0], [1.0])
    with pytest.raises(ValueError, match="no samples"):
        rmse([], [])


def test_score_per_target_and_naive_baselines():
    base = np.array([100.0, 100.0])
    y = np.log([1.1, 0.95])
    s = score("log_return", y, np.log([1.05, 0.95]), base)
    assert s["mape"] == pytest.approx(100 * (5 / 110) / 2)
    assert s["directional_accuracy"] == 1.0
    np.testing.assert_array_equal(naive_forecast("log_return", base), [0.0, 0.0])
    np.testing.assert_array_equal(naive_forecast("close", base), base)
    np.testing.assert_array_equal(naive_forecast("direction", base), [0.5, 0.5])
    # the naive zero return counts as "not up": right on the down day only
    assert (
        score("log_return", y, naive_forecast("log_return", base), base)["directional_accuracy"]
        == 0.5
    )
    c = score("close", [110.0, 95.0], [105.0, 101.0], base)
    assert c["rmse"] == pytest.approx(math.sqrt((25 + 36) / 2))
    assert c["directional_accuracy"] == 0.5
    d = score("direction", [1.0, 0.0], [0.8, 0.6], base)
    assert d["mape"] is None and d["directional_accuracy"] == 0.5
    assert d["rmse"] == pytest.approx(math.sqrt((0.04 + 0.36) / 2))
    m = compare("log_return", y, {"model": np.log([1.05, 0.95]), "naive": np.zeros(2)}, base)
    naive_rmse = rmse(y, np.zeros(2))
    assert m["model"]["skill"] == pytest.approx(1 - rmse(y, np.log([1.05, 0.95])) / naive_rmse)
    assert m["baselines"]["naive"]["skill"] == 0.0
    table = format_table(m)
    assert "model" in table and "naive" in table and "skill" in table


# --------------------------------------------------------------------------- training
def test_config_validation_and_round_trip():
    cfg = ForecastConfig(model="cnn", features=["log_return"], window=12)
    assert ForecastConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"unknown ForecastConfig field\(s\) \['windw'\]"):
        ForecastConfig.from_dict({"windw": 3})
    for bad, match in [
        ({"model": "rnn"}, "unknown model"),
        ({"model": "transformer", "hidden_size": 10}, "multiple of n_heads"),
        ({"n_heads": 0}, "n_heads"),
        ({"window": 0}, "window"),
        ({"lr": -1.0}, "lr"),
        ({"target": "price"}, "unknown target"),
        ({"horizon": 0}, "horizon"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"scaler": "zscore"}, "scaler"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"threads": 0}, "threads"),
    ]:
        with pytest.raises(ValueError, match=match):
            ForecastConfig(**bad)


def test_device_resolution():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_splits_scaler_and_samples_are_leak_free():
    prices = edge_prices(600)
    cfg, dates = resolve(ForecastConfig(**{**TINY, "horizon": 3}), prices)
    assert cfg.train_end == dates["train"]["last"] and cfg.valid_end == dates["valid"]["last"]
    scaler, tr, va, te = prepare(cfg, prices, dates)
    assert scaler.fit_end == dates["train"]["last"]  # scaler fit on the training period only
    train_last, valid_last = (
        pd.Timestamp(dates["train"]["last"]),
        pd.Timestamp(dates["valid"]["last"]),
    )
    assert tr.target_dates.max() <= train_last  # no training target from validation
    assert va.dates.min() > train_last and va.target_dates.max() <= valid_last
    assert te.dates.min() > valid_last  # validation carved before the test period
    assert va.dates.min() < te.dates.min()


def test_test_period_never_touches_training(tmp_path):
    """Changing every price in the test period changes nothing learned, only the metrics."""
    prices = edge_prices(600)
    cfg = ForecastConfig(**{**TINY, "epochs": 4, "dropout": 0.1})
    a = train(cfg.replace(run_dir=str(tmp_path / "a")), prices=prices)
    test_first = pd.Timestamp(a.splits["test"]["first"])
    bumped = prices.copy()
    after = bumped.index >= test_first
    rng = np.random.default_rng(5)
    factor = np.exp(rng.normal(0, 0.05, after.sum()))
    for col in ("open", "high", "low", "close"):
        bumped.loc[after, col] = bumped.loc[after, col] * factor
    b = train(cfg.replace(run_dir=str(tmp_path / "b")), prices=bumped)
    assert a.fit.history == b.fit.history
    for (k, va), (_, vb) in zip(
        a.forecaster.model.state_dict().items(),
        b.forecaster.model.state_dict().items(),
        strict=True,
    ):
        assert torch.equal(va, vb), k
    assert a.forecaster.scaler.to_dict()["params"] == b.forecaster.scaler.to_dict()["params"]
    assert a.metrics["model"]["rmse"] != b.metrics["model"]["rmse"]


def test_early_stopping_restores_best_weights(tmp_path):
    prices = edge_prices(800)  # a big model with small batches overfits 800 days fast
    cfg = ForecastConfig(
        model="mlp",
        window=10,
        hidden_size=64,
        num_layers=2,
        dropout=0.0,
        lr=0.003,
        epochs=60,
        patience=3,
        batch_size=16,
        plots=False,
        tensorboard=False,
        run_dir=str(tmp_path / "es"),
    )
    r = train(cfg, prices=prices)
    hist = r.fit.history
    assert r.fit.stopped_early and len(hist) - 1 == r.fit.best_epoch + cfg.patience
    assert r.fit.best_epoch >= 1  # a trained epoch (not the untrained start) was best
    best = min(hist, key=lambda h: h["val_loss"])
    assert r.fit.best_epoch == best["epoch"] and hist[-1]["val_loss"] > best["val_loss"]
    _, dates = resolve(cfg, prices)
    _, _, va, _ = prepare(r.config, prices, dates)
    fc = r.forecaster
    xv = torch.as_tensor(va.x)
    yv = torch.as_tensor(fc.scale_target(va.y), dtype=torch.float32)
    got = _mean_loss(fc.model, xv, yv, loss_function("log_return"))
    assert got == pytest.approx(best["val_loss"], rel=1e-6)


def test_run_dir_contents_and_tensorboard(trained):
    run = trained.run_dir
    for name in (
        "config.json",
        "metrics.json",
        "history.json",
        "predictions.csv",
        "checkpoint/model.pt",
        "checkpoint/forecaster.json",
        "checkpoint/scaler.json",
        "plots/predictions.png",
        "plots/loss.png",
    ):
        assert (run / name).is_file(), name
    assert (run / "plots/loss.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((run / "config.json").read_text())
    cfg = ForecastConfig.from_dict(record["config"])
    assert cfg.features == ["log_return", "volatility_20", "sma_ratio_20", "rsi_14", "volume_z_20"]
    assert cfg.scaler == "standard" and cfg.train_end == record["splits"]["train"]["last"]
    assert record["data"]["source"] == "synthetic" and len(record["data"]["sha256"]) == 64
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["baselines"]) == {"naive", "linear"}
    for entry in (metrics["model"], *metrics["baselines"].values()):
        assert {"rmse", "mae", "mape", "directional_accuracy", "skill"} <= set(entry)
    assert metrics["period"]["first"] >= record["splits"]["test"]["first"]
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and b"forecast/val_loss" in events[0].read_bytes()
    assert not list(run.parent.glob(f".{run.name}.*"))  # no temp dir left behind


def test_save_load_predicts_identically(trained, tmp_path):
    prices = edge_prices(600)
    before = trained.forecaster.predict(prices)
    loaded = Forecaster.load(trained.run_dir)  # a run dir: finds checkpoint/
    assert loaded.to_dict() == trained.forecaster.to_dict()
    after = loaded.predict(prices)
    assert before.index.equals(after.index)
    np.testing.assert_array_equal(before.to_numpy(), after.to_numpy())
    saved = loaded.save(tmp_path / "copy")
    np.testing.assert_array_equal(Forecaster.load(saved).predict(prices), after.to_numpy())
    csv = pd.read_csv(trained.run_dir / "predictions.csv", index_col="date", parse_dates=True)
    np.testing.assert_allclose(csv["model"], after.loc[csv.index], rtol=1e-12)
    again = evaluate(loaded, prices, trained.splits)
    assert again.metrics == trained.metrics
    check_no_lookahead(loaded.predict, prices, n_trials=3)  # forecast at t uses bars <= t


def test_load_errors_name_the_problem(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        Forecaster.load(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    trained.forecaster.save(broken)
    (broken / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="missing model.pt"):
        Forecaster.load(broken)
    other = tmp_path / "other"
    trained.forecaster.save(other)
    (other / "forecaster.json").write_text('{"format": "x"}')
    with pytest.raises(ValueError, match="not a stockgym forecaster"):
        Forecaster.load(other)
    with pytest.raises(ValueError, match="already exists"):
        trained.forecaster.save(other)


def test_bad_input_leaves_no_run_dir(tmp_path):
    with pytest.raises(DataError, match="window=5000"):
        train(synth_config(tmp_path, "too_long", window=5000))
    assert not (tmp_path / "too_long").exists()
    assert not list(tmp_path.glob(".too_long*"))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        train(synth_config(tmp_path, "taken"))
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    with pytest.raises(ValueError, match="no symbol"):
        train(ForecastConfig(**TINY))


def test_default_run_dir_is_under_runs(tmp_path):
    cfg = synth_config(tmp_path, epochs=1).replace(run_dir=None)
    r = train(cfg)
    assert r.run_dir.parts[:2] == ("runs", "forecast") and r.run_dir.is_dir()
    assert r.config.run_dir == str(r.run_dir)


@pytest.mark.parametrize("target", ["direction", "close"])
def test_other_targets(tmp_path, target):
    r = train(synth_config(tmp_path, target, target=target, epochs=3))
    pred = r.predictions
    if target == "direction":
        assert pred["model"].between(0, 1).all() and r.metrics["model"]["mape"] is None
    else:
        assert r.config.features == ["open", "high", "low", "close", "volume"]
        assert r.config.scaler == "minmax"
        # mapped back to prices: the same order of magnitude as the closes
        assert (pred["model"] / pred["base_close"]).between(0.5, 2).all()
        assert r.metrics["model"]["mape"] > 0
        assert r.metrics["baselines"]["naive"]["rmse"] == pytest.approx(
            rmse(pred["actual"], pred["base_close"])
        )


def test_multi_horizon_training(tmp_path):
    r = train(synth_config(tmp_path, horizon=5, epochs=2, threads=2))
    assert torch.get_num_threads() == 1  # the caller's thread count is restored
    pred = r.predictions
    gap = [
        len(pd.bdate_range(d, t)) - 1
        for d, t in zip(pred.index[:5], pred["target_date"][:5], strict=True)
    ]
    assert gap == [5] * 5


@pytest.mark.parametrize("model", ["mlp", "lstm"])
def test_skill_on_synthetic_edge_market(tmp_path, model):
    """AR(1) phi = 0.3: best RMSE skill ~0.046, best directional accuracy ~0.60."""
    cfg = synth_config(
        tmp_path,
        model,
        n_days=3000,
        model=model,
        window=10,
        hidden_size=16,
        num_layers=1,
        epochs=30,
        patience=5,
    )
    r = train(cfg)
    m = r.metrics["model"]
    assert m["skill"] > 0.02, m
    assert m["directional_accuracy"] > 0.55, m
    assert m["rmse"] < r.metrics["baselines"]["naive"]["rmse"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_cuda_and_loads_on_cpu(tmp_path):
    r = train(synth_config(tmp_path, device="cuda", epochs=2))
    assert next(r.forecaster.model.parameters()).device.type == "cuda"
    prices = edge_prices(600)
    cpu = Forecaster.load(r.run_dir, device="cpu").predict(prices)
    np.testing.assert_allclose(cpu, r.forecaster.predict(prices), rtol=1e-4, atol=1e-7)
