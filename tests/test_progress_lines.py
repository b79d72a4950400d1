"""Progress where output is redirected (not a terminal): ``stockgym train`` with an SB3
algorithm prints the same periodic lines as our agents (percent capped at 100 %, no
``nan`` before the first episode ends) and logs ``charts/portfolio_value`` as each
episode's final value (before the autoreset); ``stockgym forecast train`` prints one
plain line per epoch (or per 10 % of epochs) instead of tqdm's ``\\r`` frames, and on a
terminal its bar advances per epoch."""

from __future__ import annotations

import io
import re
import sys

import pytest
import torch
from run_configs import synthetic_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stockgym.agents.monitor import EpisodeStats, Logger, progress_line
from stockgym.cli import main
from stockgym.envs.sb3 import SB3VecEnv

LINE = re.compile(
    r"^(?P<desc>[\w-]+): (?P<step>[\d,]+)/(?P<total>[\d,]+) steps \((?P<pct>\d+)%\), "
    r"[\d,]+ steps/s, recent return (?P<ret>n/a|-?[\d.e+-]+)$"
)

SB3_RUN = [
    *synthetic_args(300),
    "--window-size",
    "5",
    "--num-envs",
    "1",
    "--episode-length",
    "15",
    "--total-timesteps",
    "100",
    "--eval-freq",
    "1000",
    "--set",
    "agent.hidden_size=8",
    "--device",
    "cpu",
]
ALGO_ARGS = {
    "sb3-ppo": ["--set", "agent.n_steps=24", "--set", "agent.batch_size=24"],
    "sb3-dqn": ["--set", "agent.learning_starts=50", "--set", "agent.train_freq=8"],
}
FORECAST = ["forecast", "train", "--symbol", "X", "--source", "synthetic", "--kind", "edge"]
FORECAST += ["--n-days", "400", "--model", "mlp", "--window", "5", "--hidden-size", "8"]
FORECAST += ["--num-layers", "1", "--patience", "50", "--no-plots", "--no-tensorboard"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("STOCKGYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STOCKGYM_CONFIG_DIR", str(tmp_path / "config"))  # SB3 zip signing key
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def final_values(monkeypatch) -> list[float]:
    """The training env's final portfolio values, read from the vector env itself (its
    ``final_info``), in the order the episodes ended."""
    seen: list[float] = []
    init = SB3VecEnv.__init__

    def recording_init(self, venv):
        init(self, venv)
        step = venv.step

        def recording_step(actions):
            out = step(actions)
            done = out[2] | out[3]
            if done.any():
                seen.extend(out[4]["final_info"]["portfolio_value"][done].tolist())
            return out

        venv.step = recording_step

    monkeypatch.setattr(SB3VecEnv, "__init__", recording_init)
    return seen


@pytest.mark.parametrize("algo", ["sb3-ppo", "sb3-dqn"])
def test_sb3_redirected_progress_and_portfolio_value(algo, tmp_path, capsys, final_values):
    run_dir = tmp_path / "run"
    argv = ["train", "--algo", algo, *SB3_RUN, *ALGO_ARGS[algo], "--run-dir", str(run_dir)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    lines = [m for m in map(LINE.match, err.splitlines()) if m]
    assert len(lines) >= 3, err
    assert "\r" not in err and "nan" not in err
    assert all(m["desc"] == algo and m["total"] == "100" for m in lines)
    pcts = [int(m["pct"]) for m in lines]
    assert pcts == sorted(pcts) and max(pcts) <= 100 and pcts[-1] == 100
    assert int(lines[-1]["step"].replace(",", "")) >= 100  # the true count, maybe beyond

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    logged = [e.value for e in acc.Scalars("charts/portfolio_value")]
    assert len(acc.Scalars("charts/episodic_return")) == len(logged)
    # one env: one point per finished episode, its own final value (float32 in the file)
    assert len(final_values) >= 5 and logged == pytest.approx(final_values, rel=1e-6)
    # the reset info's value would be the same initial cash every time
    assert len({round(v) for v in final_values}) > 1


def test_monitor_line_cosmetics(capsys):
    logger = Logger(progress=True, total=20_000, desc="ppo")  # stderr captured: lines
    stats = EpisodeStats(1, torch.device("cpu"))
    logger.progress(2_048, 1_000.0, stats)
    stats.add([0.25], [10])
    stats.drain()
    logger.progress(20_480, 1_000.0, stats)
    logger.close()
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "ppo: 2,048/20,000 steps (10%), 1,000 steps/s, recent return n/a",
        "ppo: 20,480/20,000 steps (100%), 1,000 steps/s, recent return 0.25",
    ]
    # rounded down: 100 % only once the budget is spent
    assert "(99%)" in progress_line("a2c", 19_990, 20_000, 1.0, 0.0)


def test_forecast_train_redirected_prints_plain_lines(tmp_path, capsys):
    assert main([*FORECAST, "--epochs", "3", "--run-dir", str(tmp_path / "f")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    epochs = [line for line in err.splitlines() if line.startswith("MLP: epoch ")]
    assert [line.split(",")[0] for line in epochs] == [f"MLP: epoch {i}/3" for i in (1, 2, 3)]
    assert all(re.search(r"train loss [\d.e+-]+, valid loss [\d.e+-]+$", x) for x in epochs)


def test_forecast_train_lines_every_tenth_of_the_epochs(tmp_path, capsys):
    assert main([*FORECAST, "--epochs", "20", "--run-dir", str(tmp_path / "f")]) == 0
    err = capsys.readouterr().err
    shown = [int(x) for x in re.findall(r"^MLP: epoch (\d+)/20", err, re.M)]
    assert shown == list(range(2, 21, 2))


def test_forecast_train_bar_advances_on_a_terminal(tmp_path, monkeypatch, capsys):
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main([*FORECAST, "--epochs", "3", "--run-dir", str(tmp_path / "f")]) == 0
    out = term.getvalue()
    assert "MLP: epoch" not in out  # a bar, not lines
    assert all(f"{i}/3" in out for i in (1, 2, 3)), out
