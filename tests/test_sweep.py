"""`stockgym sweep`: a 4-trial sweep (2 seeds x 2 learning rates, tiny budget, synthetic
data) through the real CLI on a local Ray writes 4 ordinary run dirs, the tables, a
runnable best.toml and the test backtest, and nothing in the home dir, printing only
stockgym's own lines (Ray's too with --verbose); `--resume` reruns nothing; bad
search-space entries fail with a clear error before Ray starts; the expansion, the
tables and the trial's read-back are checked without Ray.

Ray's unix socket paths allow ~107 characters, so a sweep dir under pytest's long
tmp_path makes the sweep put Ray's temp dir under /tmp (a short `sgray-*` dir that is
removed afterwards, its logs copied into SWEEP/ray): the end-to-end test checks that.
"""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
import sys
from pathlib import Path

import pytest
import ray.tune  # the dev extra: a missing or broken Ray fails here, never skips

from stockgym.cli import main
from stockgym.sweep.config import SweepError, sweep_from_dict

BASE = """
[train]
algo = "ppo"
total_timesteps = 128
eval_freq = 0
tensorboard = false
device = "cpu"
[train.data]
symbols = ["X"]
source = "synthetic"
options = {kind = "edge", n_days = 300}
[train.env]
window_size = 5
num_envs = 4
episode_length = 20
[train.agent]
hidden_size = 16
num_steps = 16
"""

GOOD = (
    """
[sweep]
seeds = [0, 1]
num_cpus = 2
[sweep.resources]
cpu = 1
[space]
"agent.learning_rate" = [1e-3, 3e-3]
"""
    + BASE
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def _write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _sweep(text: str):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return sweep_from_dict(tomllib.loads(text))


# ---------------------------------------------------------------- bad input, no Ray needed
BAD = [
    ('"agent.learning_rate" = {unifrom = [1e-4, 1e-2]}', "", "unknown search kind 'unifrom'"),
    ('"agent.learnin_rate" = [1e-3, 3e-3]', "", "[space] agent.learnin_rate = 0.001"),
    ('"agent.learning_rate" = [1e-3, -1.0]', "", "[space] agent.learning_rate = -1.0"),
    (
        '"agent.learning_rate" = {loguniform = [0.0, 1e-2]}',
        'search = "random"',
        "loguniform needs 0 < lo < hi",
    ),
    ('"agent.gamma" = {uniform = [0.8, 0.99]}', "", 'set [sweep] search = "random"'),
    ('"env.window_size" = [5, "ten"]', "", "env.window_size must be int, got 'ten'"),
    ('"env.window_size" = [5, 400]', "", "[space] env.window_size = 400"),
    ("seed = [1, 2]", "", "training seeds go in [sweep] seeds"),
    ('"agent.learning_rate" = []', "", "[space] agent.learning_rate is an empty list"),
    ('"agent.learning_rate" = 1e-3', "", "is a fixed value"),
    ('"agent.learning_rate" = [1e-3, 1e-3]', "", "more than once"),
    ('"agent.learning_rate" = [1e-3]', 'search = "optuna"', "Optuna cannot grid over a list"),
    ('"agent.learning_rate" = [1e-3]', 'metric = "test.agent.sharpe"', "metric must be one of"),
    ('"agent.learning_rate" = [1e-3]', "mystery = 1", "unknown [sweep] key(s) ['mystery']"),
]


@pytest.mark.parametrize("entry,sweep_line,message", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_entry_fails_before_any_trial(
    tmp_path, capsys, monkeypatch, entry, sweep_line, message
):
    def no_init(*a, **k):  # prove Ray is never started
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(ray, "init", no_init)
    cfg = _write(tmp_path, f"[sweep]\nseeds = [0, 1]\n{sweep_line}\n[space]\n{entry}\n{BASE}")
    out = tmp_path / "out"
    code = main(["sweep", str(cfg), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err
    assert not out.exists()  # nothing written, no trial started


def test_preflight_builds_the_agent_of_each_value(tmp_path, capsys):
    text = GOOD.replace(
        '"agent.learning_rate" = [1e-3, 3e-3]', '"env.action_type" = ["discrete", "continuous"]'
    )
    text = text.replace('algo = "ppo"', 'algo = "dqn"').replace(
        "num_steps = 16", "learning_starts = 50"
    )
    cfg = _write(tmp_path, text)
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "[space] env.action_type = 'continuous': DQN needs a Discrete action space" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--address", "127.0.0.1:6379", "--num-cpus", "2"], "are for a local Ray"),
        (["--num-cpus", "1"], "a trial needs 2 CPUs"),
    ],
)
def test_bad_ray_flags_fail_before_ray(tmp_path, capsys, flags, message):
    cfg = _write(tmp_path, GOOD.replace("cpu = 1", "cpu = 2"))
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "out"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_ray_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    cfg = _write(tmp_path, GOOD)
    code = main(["sweep", str(cfg), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert 'pip install "stockgym[ray]"' in err and "ray[tune]" in err
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_trials_without_ray(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    cfg = _write(tmp_path, GOOD)
    code = main(["sweep", str(cfg), "--out", str(tmp_path / "out"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "4 trials (2 configurations x 2 seeds)" in out
    assert "c000-s0 c000-s1" in out and "c001-s0 c001-s1" in out
    assert not (tmp_path / "out").exists()
    # symbols from [sweep] symbols (the base config names none): one configuration each
    text = GOOD.replace("seeds = [0, 1]", 'seeds = [3]\nsymbols = ["X", ["Y", "Z"]]')
    cfg = _write(tmp_path, text.replace('symbols = ["X"]\n', ""), "symbols.toml")
    assert main(["sweep", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 trials (4 configurations x 1 seed)" in out
    assert "c002       data.symbols=['Y', 'Z'], agent.learning_rate=0.001  ->  c002-s3" in out


# ---------------------------------------------------------------- expansion and tables
def test_random_search_is_seeded_and_seeds_share_each_draw():
    text = (
        """
[sweep]
search = "random"
n_trials = 3
seed = 7
seeds = [0, 1]
symbols = ["A", ["B", "C"]]
[space]
"agent.learning_rate" = {loguniform = [1e-4, 1e-2]}
"agent.gamma" = {uniform = [0.8, 0.99]}
"env.window_size" = {randint = [5, 6]}
"agent.backbone" = ["mlp", "cnn"]
"""
        + BASE
    )
    a, b = _sweep(text), _sweep(text)
    configs = a.configurations()
    assert configs == b.configurations()  # the same draws every time (resume relies on it)
    assert len(configs) == 3 * 2 * 2  # draws x symbols x backbone grid
    assert len(a.trials()) == 24
    draws = {
        json.dumps(
            {
                k: v
                for k, v in c["params"].items()
                if k in ("agent.learning_rate", "agent.gamma", "env.window_size")
            },
            sort_keys=True,
        )
        for c in configs
    }
    assert len(draws) == 3
    for c in configs:
        p = c["params"]
        assert 1e-4 <= p["agent.learning_rate"] <= 1e-2 and 0.8 <= p["agent.gamma"] <= 0.99
        assert p["env.window_size"] in (5, 6)
        assert p["data.symbols"] in (["A"], ["B", "C"])
    by_config = {}
    for t in a.trials():  # both seeds of a configuration train the same values
        by_config.setdefault(t["config"], []).append((t["seed"], json.dumps(t["params"])))
    assert all(
        len({p for _, p in v}) == 1 and [s for s, _ in v] == [0, 1] for v in by_config.values()
    )
    other = _sweep(text.replace("seed = 7", "seed = 8")).configurations()
    assert other != configs


def test_optuna_rejects_symbol_grid():
    with pytest.raises(SweepError, match="Optuna cannot search"):
        _sweep(
            '[sweep]\nsearch = "optuna"\nsymbols = ["A", "B"]\n[space]\n'
            '"agent.learning_rate" = {loguniform = [1e-4, 1e-2]}\n' + BASE
        )


def _report(cid, lr, values, status="ok"):
    runs = [
        {
            "name": f"{cid}-s{s}",
            "seed": s,
            "run_dir": f"/x/{cid}-s{s}",
            "metric": v,
            "valid_return": v / 10,
            "valid_sharpe": v,
            "valid_bh_return": 0.0,
            "timesteps": 128,
            "seconds": 1.0,
            "trained": True,
            "invocation": "i",
        }
        for s, v in enumerate(values)
    ]
    rep = {
        "config": cid,
        "params": {"agent.learning_rate": lr},
        "objective": None,
        "runs": runs,
        "status": status,
    }
    if status != "ok":
        rep.update({"runs": [], "error": "ValueError: boom", "seeds": [0], "names": [f"{cid}-s0"]})
    return rep


def test_results_table_sorted_with_mean_and_spread():
    from stockgym.sweep.results import config_rows, run_rows, to_csv, to_markdown

    sweep = _sweep(GOOD)
    reports = [
        _report("c000", 1e-3, [0.1, 0.3]),
        _report("c001", 3e-3, [0.5, 0.9]),
        _report("c002", 1e-2, [], status="error"),
    ]
    rows = config_rows(reports, sweep)
    assert [r["config"] for r in rows] == ["c001", "c000", "c002"]
    assert [r["rank"] for r in rows] == [1, 2, None]
    assert rows[0]["mean"] == pytest.approx(0.7)
    assert rows[0]["std"] == pytest.approx(statistics.stdev([0.5, 0.9]))
    assert (rows[0]["min"], rows[0]["max"], rows[0]["seeds"]) == (0.5, 0.9, "2/2")
    assert rows[2]["mean"] is None and "boom" in rows[2]["status"]
    sweep.mode = "min"
    assert [r["config"] for r in config_rows(reports, sweep)] == ["c000", "c001", "c002"]
    runs = run_rows(reports, sweep)
    assert len(runs) == 5 and runs[-1]["status"].startswith("error")
    text = to_csv(rows, ["config", "mean"])
    assert text.splitlines()[1].startswith("c001,0.7")
    assert "| c001 | 0.7 |" in to_markdown(rows, ["config", "mean"])


def test_trial_reads_back_a_finished_run_and_restarts_a_partial_one(tmp_path):
    from stockgym.sweep.trial import run_one

    sweep = _sweep(GOOD)
    plan = {**sweep.plan(tmp_path / "sw"), "invocation": "a"}
    params = {"agent.learning_rate": 1e-3}
    first = run_one(plan, params, 0, "c000-s0")
    run_dir = Path(first["run_dir"])
    assert first["trained"] and (run_dir / "model" / "agent.pt").is_file()
    record = json.loads((run_dir / "config.json").read_text())
    assert record["config"]["agent"]["learning_rate"] == 1e-3 and record["config"]["seed"] == 0
    stamp = (run_dir / "summary.json").stat().st_mtime_ns
    again = run_one({**plan, "invocation": "b"}, params, 0, "c000-s0")
    assert not again["trained"] and again["metric"] == first["metric"]
    assert (run_dir / "summary.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="not this sweep's run"):
        run_one(plan, {"agent.learning_rate": 3e-3}, 0, "c000-s0")
    (run_dir / "summary.json").unlink()  # as if the trial was killed mid-training
    redo = run_one(plan, params, 0, "c000-s0")
    assert redo["trained"] and (run_dir / "summary.json").is_file()


# ---------------------------------------------------------------- the real thing, on Ray
# Ray Tune's console output that a sweep shows only with --verbose
RAY_CHATTER = [
    "Configuration for experiment",
    "View detailed results here",
    "To visualize your results with TensorBoard",
]
# the first word of each line stockgym's sweep prints (see stockgym/cli/sweep.py)
OWN_HEADS = {"sweep", "dir", "ray", "trial", "results", "rank", "trials", "best", "wrote"}
OWN_HEADS |= {"next", "test", "run", "mean", "failed", "1", "2"}


def _foreign_lines(text: str) -> list[str]:
    """The non-blank lines of ``text`` that stockgym's sweep does not print."""
    return [
        ln
        for ln in text.splitlines()
        if ln.strip()
        and ln.split()[0] not in OWN_HEADS
        and not re.fullmatch(r"c\d{3}-s\d+", ln.split()[0])
    ]


def test_sweep_on_local_ray_then_resume_reruns_nothing(tmp_path, capfd, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # Ray and its workers must write nothing here
    monkeypatch.setenv("STOCKGYM_CONFIG_DIR", str(tmp_path / "config"))
    cfg = _write(tmp_path, GOOD)
    out = tmp_path / "a-sweep-dir-whose-path-is-too-long-for-ray-sockets"
    output_switch = os.environ.get("RAY_AIR_NEW_OUTPUT")
    code = main(["sweep", str(cfg), "--out", str(out), "--no-plots"])
    captured = capfd.readouterr()  # fd-level: Ray's processes and Tune's prints included
    assert code == 0, captured.err[-3000:]
    # quiet unless --verbose: only stockgym's own lines, none of Tune's banners or hints
    for ray_text in RAY_CHATTER:
        assert ray_text not in captured.out + captured.err, captured.out[-3000:]
    assert "trial      [4/4, " in captured.out
    assert _foreign_lines(captured.out + captured.err) == []
    assert os.environ.get("RAY_AIR_NEW_OUTPUT") == output_switch  # set for the sweep only

    # 4 ordinary run dirs, each with its own seed and learning rate
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == ["c000-s0", "c000-s1", "c001-s0", "c001-s1"]
    for name in names:
        rec = json.loads((out / "runs" / name / "config.json").read_text())
        assert rec["config"]["seed"] == int(name[-1])
        assert rec["config"]["agent"]["learning_rate"] == (
            1e-3 if name.startswith("c000") else 3e-3
        )
        assert (out / "runs" / name / "model" / "agent.pt").is_file()
    # the tables agree with the runs' own summaries
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs) == 4
    for r in runs:
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert float(r["valid.agent.sharpe"]) == pytest.approx(summary["valid"]["agent"]["sharpe"])
    configs = list(csv.DictReader((out / "results.csv").open()))
    assert [c["rank"] for c in configs] == ["1", "2"]
    for c in configs:
        vals = [float(r["valid.agent.sharpe"]) for r in runs if r["config"] == c["config"]]
        assert float(c["mean"]) == pytest.approx(statistics.fmean(vals))
        assert float(c["std"]) == pytest.approx(statistics.stdev(vals), abs=1e-12)
    assert float(configs[0]["mean"]) >= float(configs[1]["mean"])
    assert "## Configurations" in (out / "results.md").read_text()
    assert "rank  config  agent.learning_rate" in captured.out
    # best.toml is a runnable train config of the best configuration
    from stockgym.experiment import load_config

    best = load_config(out / "best.toml")
    assert best.agent["learning_rate"] == float(configs[0]["agent.learning_rate"])
    assert best.run_dir is None and best.seed == 0
    # the test period, once, for the best configuration's runs
    test = json.loads((out / "best" / "test.json").read_text())
    rec = json.loads((out / "runs" / f"{configs[0]['config']}-s0" / "config.json").read_text())
    assert test["period"] == rec["splits"]["test"] and len(test["runs"]) == 2
    assert all((Path(r["backtest_dir"]) / "metrics.json").is_file() for r in test["runs"])
    # Ray: temp dir outside (path too long), removed, logs kept; nothing in the home dir
    result = json.loads((out / "results.json").read_text())
    assert result["ray"]["temp_dir"].startswith(("/tmp/sgray-", "/tmp"))
    assert len(result["ray"]["temp_dir"]) <= 43 and not os.path.exists(result["ray"]["temp_dir"])
    assert list((out / "ray").glob("session_*/logs"))
    assert (out / "tune").is_dir()
    assert sorted(p.name for p in home.rglob("*")) == []
    assert main(["compare", *(r["backtest_dir"] for r in test["runs"])]) == 0
    capfd.readouterr()

    # --resume (--verbose): nothing is rerun, nothing rewritten; Ray may speak
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    test_stamp = (out / "best" / "test.json").stat().st_mtime_ns
    code = main(["sweep", str(cfg), "--out", str(out), "--resume", "--no-plots", "--verbose"])
    captured = capfd.readouterr()
    assert code == 0, captured.err[-3000:]
    assert _foreign_lines(captured.out + captured.err) != []  # Ray's own output is shown
    assert "this invocation trained 0 run(s)" in captured.out
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()} == stamps
    assert (out / "best" / "test.json").stat().st_mtime_ns == test_stamp
    assert json.loads((out / "results.json").read_text())["trained_now"] == 0
    assert sorted(p.name for p in home.rglob("*")) == []

    # a new sweep into the same dir, or a changed file with --resume, is refused
    assert main(["sweep", str(cfg), "--out", str(out)]) == 2
    assert "--resume continues" in capfd.readouterr().err
    changed = _write(tmp_path, GOOD.replace("3e-3", "5e-3"), "changed.toml")
    assert main(["sweep", str(changed), "--out", str(out), "--resume"]) == 2
    assert "changed since the sweep" in capfd.readouterr().err


def test_an_interrupted_trial_run_is_resumed_not_retrained(
    tmp_path, monkeypatch, interrupt_training
):
    """A run dir an interrupted trial left with a checkpoint is continued (resume), and
    one of another config is not touched."""
    from stockgym.experiment import TrainConfig, train
    from stockgym.sweep.trial import _resume

    tree = {
        "algo": "ppo",
        "total_timesteps": 256,
        "seed": 1,
        "device": "cpu",
        "eval_freq": 0,
        "checkpoint_freq": 64,
        "run_dir": str(tmp_path / "run"),
        "progress": False,
        "data": {
            "symbols": ["X"],
            "source": "synthetic",
            "options": {"kind": "edge", "n_days": 400, "seed": 2},
        },
        "env": {"num_envs": 4, "window_size": 5, "features": ["log_return"]},
        "agent": {"num_steps": 8, "hidden_size": 8},
    }
    interrupt_training(96)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig.from_dict(tree))
    monkeypatch.undo()
    assert _resume(tmp_path / "run", {**tree, "seed": 2}) is None  # another config's run
    summary = _resume(tmp_path / "run", tree)
    assert summary is not None and summary["resumes"] == 1
    assert summary["timesteps"] == 256 and summary["interrupted"] is False
