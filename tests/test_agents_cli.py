"""`stockgym train`, `stockgym backtest --model` and `stockgym signal` end to end through
stockgym.cli.main: tiny runs, TOML + flag overrides, the test period backtested with
the run's costs, the next-day signal, and bad input (exit 2, a clear message, nothing
left behind)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_configs import synthetic_args

from stockgym.cli import main

SYNTH = [
    *synthetic_args(400),
]
TINY = [
    "--window-size",
    "5",
    "--num-envs",
    "8",
    "--episode-length",
    "20",
    "--total-timesteps",
    "600",
    "--eval-freq",
    "300",
    "--set",
    "agent.hidden_size=16",
    "--no-progress",
    "--device",
    "cpu",
]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def trained(tmp_path, capsys) -> Path:
    out = tmp_path / "ppo"
    code, stdout, err = run(
        [
            "train",
            "--algo",
            "ppo",
            *SYNTH,
            *TINY,
            "--set",
            "agent.num_steps=16",
            "--market",
            "us",
            "--run-dir",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    assert "validation" in stdout and f"stockgym backtest --model {out}" in stdout
    return out


def test_train_writes_a_run(trained):
    record = json.loads((trained / "config.json").read_text())
    cfg = record["config"]
    assert cfg["algo"] == "ppo" and cfg["data"]["options"] == {"kind": "edge", "n_days": 400}
    assert cfg["env"]["window_size"] == 5 and cfg["env"]["market"] == "us"
    assert record["agent"]["num_steps"] == 16 and record["agent"]["hidden_size"] == 16
    assert (trained / "model" / "agent.pt").is_file()
    assert any((trained / "tensorboard").iterdir())


def test_config_file_and_flags_override_it(tmp_path, capsys):
    (tmp_path / "exp.toml").write_text(
        'algo = "reinforce"\ntotal_timesteps = 400\neval_freq = 0\ndevice = "cpu"\n'
        '[data]\nsymbols = ["X"]\nsource = "synthetic"\n'
        '[data.options]\nkind = "edge"\nn_days = 400\n'
        "[env]\nwindow_size = 5\nnum_envs = 8\nepisode_length = 20\n"
        "[agent]\nhidden_size = 8\nlearning_rate = 0.01\n"
    )
    code, _, err = run(
        [
            "train",
            "--config",
            "exp.toml",
            "--seed",
            "3",
            "--algo",
            "dqn",
            "--set",
            "agent.learning_starts=50",
            "--no-progress",
            "--no-tensorboard",
            "--run-dir",
            "r",
        ],
        capsys,
    )
    assert code == 0, err
    record = json.loads((tmp_path / "r" / "config.json").read_text())
    assert record["config"]["algo"] == "dqn" and record["config"]["seed"] == 3
    assert record["agent"]["learning_rate"] == 0.01 and record["agent"]["learning_starts"] == 50
    assert not (tmp_path / "r" / "tensorboard").exists()
    # the run's config.toml re-runs it
    code, _, err = run(
        ["train", "--config", tmp_path / "r" / "config.toml", "--run-dir", "r2", "--no-progress"],
        capsys,
    )
    assert code == 0, err
    again = json.loads((tmp_path / "r2" / "config.json").read_text())
    assert again["agent"] == record["agent"] and again["splits"] == record["splits"]


def test_backtest_model_on_the_test_period(trained, tmp_path, capsys):
    out = tmp_path / "bt"
    code, stdout, err = run(["backtest", "--model", trained, "--out", out, "--no-plots"], capsys)
    assert code == 0, err
    record = json.loads((trained / "config.json").read_text())
    config = json.loads((out / "config.json").read_text())
    test = record["splits"]["test"]
    assert (config["backtest"]["first"], config["backtest"]["last"]) == (
        test["first"],
        test["last"],
    )
    assert config["env"]["costs"] == record["env"]["costs"]  # the run's costs
    assert config["strategy"]["name"] == "ppo_agent" and config["data"]["period"] == "test"
    metrics = json.loads((out / "metrics.json").read_text())
    assert "benchmark" in metrics and "sharpe" in metrics
    assert "PPO agent" in stdout and "benchmark  buy-and-hold X" in stdout
    # other parts of the run's split on request
    code, stdout, err = run(
        [
            "backtest",
            "--model",
            trained,
            "--period",
            "valid",
            "--out",
            tmp_path / "bv",
            "--no-plots",
        ],
        capsys,
    )
    assert code == 0, err
    assert "note: backtesting the valid period" in stdout


def test_signal(trained, capsys):
    code, stdout, err = run(["signal", "--model", trained], capsys)
    assert code == 0, err
    assert "as of      close of" in stdout and "X" in stdout
    code, stdout, err = run(
        ["signal", "--model", trained, "--json", "--cash", "1000", "--shares", "5"], capsys
    )
    assert code == 0, err
    sig = json.loads(stdout)
    assert sig["cash"] == 1000 and sig["orders"][0]["shares_now"] == 5
    assert sig["action"] in (0, 1) and sig["orders"][0]["target_weight"] == float(sig["action"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--algo", "ppo", "--no-progress"], "data.symbols must name at least one symbol"),
        (["train", *SYNTH, "--set", "agent.learning_rte=1"], "unknown PPOConfig field"),
        (["train", *SYNTH, "--set", "nonsense"], "--set takes KEY=VALUE"),
        (["train", *SYNTH, "--set", "env.window=3"], "unknown [env] key(s) ['window']"),
        (["train", *SYNTH, "--total-timesteps", "0"], "total_timesteps must be >= 1"),
        (["train", *SYNTH, "--config", "missing.toml"], "config file not found: missing.toml"),
        (
            ["train", "--symbol", "NOPE", "--source", "sample", "--no-progress"],
            "unknown sample symbol",
        ),
        (["signal", "--model", "nowhere"], "--model: run dir nowhere does not exist"),
        (["backtest", "--model", "nowhere"], "--model: run dir nowhere does not exist"),
        (["backtest", "--symbol", "X"], "give --strategy NAME and --symbol SYMBOL"),
    ],
)
def test_bad_input(argv, message, tmp_path, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not Path("runs").exists()  # nothing half-written


def test_bad_input_with_a_model(trained, tmp_path, capsys):
    code, _, err = run(["backtest", "--model", trained, "--strategy", "sma_cross"], capsys)
    assert code == 2 and "--strategy does not apply with --model" in err
    code, _, err = run(["signal", "--model", trained, "--shares", "1", "2"], capsys)
    assert code == 2 and "--shares needs one number per symbol (1: X), got 2" in err
    code, _, err = run(["signal", "--model", tmp_path], capsys)
    assert code == 2 and "is not a `stockgym train` run dir" in err
    code, _, err = run(["signal", "--model", trained, "--symbol", "X", "Y"], capsys)
    assert code == 2 and "the model trades 1 symbol(s) (X), got 2 (X Y)" in err
    # a model whose spaces differ from the run's env: both named
    record = json.loads((trained / "config.json").read_text())
    record["env_kwargs"]["window_size"] = 7
    (trained / "config.json").write_text(json.dumps(record))
    code, _, err = run(["backtest", "--model", trained, "--out", tmp_path / "x"], capsys)
    assert code == 2 and "does not fit this env" in err
    assert "model: observation Box(27,)" in err and "env:   observation Box(37,)" in err
    assert not (tmp_path / "x").exists()


def test_train_agent_script(tmp_path, capsys):
    import runpy

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_agent.py"
    (tmp_path / "exp.toml").write_text(
        'total_timesteps = 300\neval_freq = 0\ndevice = "cpu"\n'
        '[data]\nsymbols = ["X"]\nsource = "synthetic"\n[data.options]\nn_days = 300\n'
        "[env]\nwindow_size = 5\nnum_envs = 4\nepisode_length = 20\n[agent]\nhidden_size = 8\n"
    )
    module = runpy.run_path(str(script))
    module["main"](["--config", "exp.toml", "--algo", "reinforce", "--run-dir", "s"])
    assert "trained    REINFORCE (mlp) on X" in capsys.readouterr().out
    record = json.loads((tmp_path / "s" / "config.json").read_text())
    assert record["config"]["algo"] == "reinforce" and record["config"]["env"]["num_envs"] == 4
    default = module["default_config"]()
    assert default.data.symbols == ["AAPL"] and default.data.source == "sample"


def test_command_line_helps():
    """Every subcommand's --help has examples; an unknown flag prints that subcommand's
    usage (not the top level's); training uses one torch thread unless told otherwise."""
    import argparse

    from stockgym.cli import build_parser, parsers
    from stockgym.cli.train import build_config

    parser = build_parser()
    leaves = [
        p
        for p in parsers(parser)
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
    ]
    assert len(leaves) >= 10
    for p in leaves:
        assert "examples:" in (p.epilog or ""), f"{p.prog} --help has no examples"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--algo", "ppo", "--bogus"])
    assert exc.value.code == 2
    args = parser.parse_args(["train", *SYNTH, *TINY])
    assert build_config(args).agent["threads"] == 1
    args = parser.parse_args(["train", *SYNTH, *TINY, "--threads", "2"])
    assert build_config(args).agent["threads"] == 2


def test_rule_and_compile_flags_reach_the_training_env():
    """--max-participation / --impact / --board / --price-limit reach the env's rules;
    --compile-env compiles the training vector env's step (env.compile)."""
    from stockgym.cli import build_parser
    from stockgym.cli.train import build_config
    from stockgym.experiment.train import prepare

    flags = ["--market", "krx", "--max-participation", "0.02", "--impact", "sqrt"]
    flags += ["--board", "kosdaq", "--price-limit", "off", "--compile-env"]
    config = build_config(build_parser().parse_args(["train", *SYNTH, *TINY, *flags]))
    assert config.env.compile is True and config.env.max_participation == 0.02
    prep = prepare(config)
    venv, rules = prep["venv"], prep["valid_env"].rules
    assert venv.compiled and venv.template.rules == rules
    assert rules.boards == ("kosdaq",) and rules.impact == "sqrt" and not rules.price_limit
    assert rules.tax_schedule == "krx" and rules.ticks
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", *SYNTH, "--max-participation", "1.5"])


def test_precision_flag_reaches_the_agent(tmp_path, capsys):
    """--precision bfloat16 trains with autocast (agent.precision, recorded in the run's
    config); an agent without the option says so in one line."""
    out = tmp_path / "run"
    argv = ["train", "--algo", "ppo", *SYNTH, *TINY, "--precision", "bfloat16"]
    code, _, err = run([*argv, "--run-dir", out], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["agent"]["precision"] == "bfloat16"
    code, _, err = run(["train", "--algo", "dqn", *SYNTH, *TINY, "--precision", "bfloat16"], capsys)
    assert code == 2 and "precision" in err and err.strip().count("\n") == 0


def test_unknown_flag_names_the_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["backtest", "--strategy", "buy_and_hold", "--nope"])
    err = capsys.readouterr().err
    assert "usage: stockgym backtest" in err and "unrecognized arguments: --nope" in err


def test_missing_extra_is_one_line(monkeypatch, capsys):
    import stockgym.cli.train as train_cli

    def no_sb3(args):
        raise ModuleNotFoundError("stable-baselines3 is not installed: pip install 'stockgym[sb3]'")

    monkeypatch.setattr(train_cli, "cmd_train", no_sb3)
    code, out, err = run(["train", "--algo", "sb3-ppo", *SYNTH, *TINY], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "pip install 'stockgym[sb3]'" in err


def test_resume_says_where_and_refuses_a_live_run(tmp_path, capsys):
    from stockgym.experiment.train import run_lock

    out = tmp_path / "run"
    code, _, err = run(
        ["train", "--algo", "ppo", *SYNTH, *TINY, "--checkpoint-freq", "300", "--run-dir", out],
        capsys,
    )
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    summary["interrupted"] = True  # as if killed after the last checkpoint
    (out / "summary.json").write_text(json.dumps(summary))
    with run_lock(out):  # another process still trains it
        code, _, err = run(["train", "--resume", out], capsys)
    assert code == 2 and "still being trained by another process" in err
    code, stdout, err = run(["train", "--resume", out, "--no-progress"], capsys)
    assert code == 0, err
    steps = summary["timesteps"]  # whole rollouts: may pass total_timesteps
    assert f"resuming  {out} from step {steps:,} of 600 (checkpoint.pt; resume #1)" in stdout


def test_backtest_model_default_out_is_named_after_the_run(trained, tmp_path, capsys):
    code, stdout, err = run(["backtest", "--model", trained, "--no-plots"], capsys)
    assert code == 0, err
    assert (tmp_path / "runs" / f"backtest-{trained.name}" / "metrics.json").is_file()


def test_train_with_forecast_features_backtest_and_signal(tmp_path, capsys):
    """--forecasts puts walk-forward forecasts into the observation; the run records them
    and backtest --model / signal rebuild them the same way."""
    out = tmp_path / "fc"
    code, _, err = run(
        [
            "train",
            "--algo",
            "ppo",
            *SYNTH,
            *TINY,
            "--set",
            "data.options.n_days=700",
            "--forecasts",
            "mlp",
            "--set",
            "env.forecasts.min_train=100",
            "--set",
            "env.forecasts.epochs=2",
            "--set",
            "env.forecasts.horizon=[1,3]",
            "--run-dir",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    record = json.loads((out / "config.json").read_text())
    assert record["forecasts"]["model"] == "mlp" and record["forecasts"]["horizon"] == [1, 3]
    assert record["env"]["features"][-2:] == ["forecast_mlp_h1", "forecast_mlp_h3"]
    assert (out / "forecast_scaler.json").is_file()
    code, _, err = run(["backtest", "--model", out, "--out", tmp_path / "bt", "--no-plots"], capsys)
    assert code == 0, err
    code, stdout, err = run(["signal", "--model", out, "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["orders"]


def test_progress_is_log_lines_when_redirected(tmp_path, capsys):
    argv = [a for a in TINY if a != "--no-progress"]
    code, _, err = run(
        ["train", "--algo", "ppo", *SYNTH, *argv, "--run-dir", tmp_path / "p"], capsys
    )
    assert code == 0, err
    lines = [x for x in err.splitlines() if x.startswith("ppo: ")]
    assert 3 <= len(lines) <= 11 and all("steps/s" in x for x in lines)
