"""Shared test setup.

Torch runs on one intra-op thread in tests: the networks here are tiny, and on a busy
2-core machine torch's thread pool spins against other processes (one LSTM step took
250x longer with 2 threads than with 1 on the loaded CI box). Tests that check thread
handling set their own count and restore it.
"""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # subprocesses started by tests inherit it
# the per-user signing key (stockgym.agents.integrity) of tests: never the real user's
os.environ.setdefault("STOCKGYM_CONFIG_DIR", tempfile.mkdtemp(prefix="stockgym-config-"))


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def interrupt_training(monkeypatch):
    """``interrupt_training(step)``: from then on, ``Agent.learn`` raises
    KeyboardInterrupt (a Ctrl-C) in the first callback at or after ``step``."""
    from stockgym.agents.base import Agent

    original = Agent.learn

    def arm(at: int) -> None:
        def learn(self, total_timesteps, *, callback=None, **kw):
            def cb(a, step):
                callback(a, step)
                if step >= at:
                    raise KeyboardInterrupt

            return original(self, total_timesteps, callback=cb, **kw)

        monkeypatch.setattr(Agent, "learn", learn)

    yield arm
    monkeypatch.setattr(Agent, "learn", original)
