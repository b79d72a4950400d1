"""Smoke test of benchmarks/bench_gpu.py: every task at tiny sizes on the CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()  # main() sets torch's thread count
    yield
    torch.set_num_threads(threads)


def test_every_task_quick_on_cpu(bench, tmp_path):
    out_file = tmp_path / "gpu.json"
    out = bench.main(
        [
            "--device",
            "cpu",
            "--quick",
            "--no-compile",
            "--env-sizes",
            "32",
            "--steps",
            "5",
            "--epochs",
            "1",
            "--json",
            str(out_file),
        ]
    )
    assert out["device"].startswith("cpu: ") and torch.__version__ in out["device"]
    assert out["errors"] == [] and out["skipped"] == []

    env = out["env"]
    assert {(r["n_assets"], r["n_envs"], r["mode"]) for r in env} == {
        (1, 32, "eager"),
        (30, 32, "eager"),
    }
    assert all(r["env_steps_per_s"] > 0 and r["device"] == out["device"] for r in env)
    assert all(r["host_checks"] for r in env)  # on the CPU the env reads its flag each step
    assert {r["n_assets"]: r["obs_dim"] for r in env}[30] > {
        r["n_assets"]: r["obs_dim"] for r in env
    }[1]

    ppo = out["ppo"]
    assert [r["backbone"] for r in ppo] == ["mlp", "lstm"]
    for r in ppo:
        assert r["ours_median"] > 0 and r["sb3_median"] > 0 and r["ratio"] > 0
        assert r["device"] == out["device"]

    fc = out["forecast"]
    assert {(r["model"], r["batch"]) for r in fc} == {("lstm", 64), ("gru", 64)}
    assert all(r["epoch_s"] > 0 and r["device"] == out["devices"]["cpu"] for r in fc)

    saved = json.loads(out_file.read_text())
    assert saved["device"] == out["device"] and len(saved["env"]) == 2


def test_budget_stops_new_measurements(bench):
    out = bench.main(["--device", "cpu", "--quick", "--budget-s", "0", "--tasks", "env", "ppo"])
    assert out["env"] == [] and out["ppo"] == []
    assert "env 1 asset(s) N=64 eager" in out["skipped"]
    assert any(s.startswith("ppo mlp") for s in out["skipped"])


def test_cuda_request_falls_back_to_cpu(bench, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.pick_device("cuda") == "cpu"
    assert "falling back to the CPU" in capsys.readouterr().out
    assert bench.pick_device("cpu") == "cpu"


def test_a_failed_measurement_is_reported_and_the_run_goes_on(bench, monkeypatch):
    def boom(args, prices, n_assets, n, mode, dev_name):
        if n_assets == 30:
            raise RuntimeError("CUDA out of memory\nmore lines")
        return {
            "n_assets": n_assets,
            "n_envs": n,
            "mode": mode,
            "env_steps_per_s": 1.0,
            "warmup_s": 0,
        }

    monkeypatch.setattr(bench, "env_row", boom)
    monkeypatch.setattr(bench, "print_env", lambda rows, name: None)
    argv = ["--device", "cpu", "--quick", "--no-compile", "--env-sizes", "8", "--tasks", "env"]
    out = bench.main(argv)
    assert [r["n_assets"] for r in out["env"]] == [1]
    assert out["errors"] == ["env 30 asset(s) N=8 eager: RuntimeError: CUDA out of memory"]
