"""Sweeps over seeds, symbols and hyperparameters on Ray Tune (``stockgym sweep``).

Every trial is an ordinary ``stockgym train`` run (:func:`stockgym.experiment.train`)
selected on the validation period; see ``docs/sweep.md``. Ray and Optuna (the ``[ray]``
extra) are imported only when a sweep runs.
"""

from stockgym.sweep.config import (
    METRICS,
    Entry,
    SweepConfig,
    SweepError,
    load_sweep,
    sweep_from_dict,
)

__all__ = ["METRICS", "Entry", "SweepConfig", "SweepError", "load_sweep", "sweep_from_dict"]
