"""Shared test setup.

Torch runs on one intra-op thread in tests: the networks here are tiny, and on a busy
2-core machine torch's thread pool spins against other processes (one LSTM step took
250x longer with 2 threads than with 1 on the loaded CI box). Tests that check thread
handling set their own count and restore it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # subprocesses started by tests inherit it


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)
