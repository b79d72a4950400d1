"""``compile=True``: the vector env's step and restart through ``torch.compile``.

``torch.compile(fullgraph=True, dynamic=False)`` fuses the element-wise maths of
:func:`stockgym.envs.vector_step.transition` (and of ``restart``) into a few kernels
(C++ on the CPU, Triton on CUDA). The numbers are those of the eager functions (the
same operations, tested to 1e-9).

The bisection of buy sizes under a minimum commission (a data-dependent loop) is not
compiled: a compiled step reports the envs that need it in the ``NEEDS_BISECTION`` bit
of its flag, and the env redoes that step eagerly. A new action dtype compiles once
more (``torch.compile``'s guards). Where the first compilation fails (no C++ compiler,
an unsupported device), a ``RuntimeWarning`` says so and the eager functions run
instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from stockgym.envs.vector_step import MarketTensors, StepSpec, VecState, restart, transition

# Bar indices are in range by construction (first <= t < last on a step), so the
# generated code need not bounds-check every gather.
_OPTIONS = {"assert_indirect_indexing": False}


class CompiledStep:
    """The compiled ``step(state, actions)`` and ``restart(state, done, start, end)`` of
    one vector env (its settings and market tensors are fixed at construction)."""

    def __init__(self, spec: StepSpec, market: MarketTensors) -> None:
        def step(state: VecState, actions: torch.Tensor):
            return transition(state, actions, market, spec, False)

        def restart_(state: VecState, done, start, end):
            return restart(state, done, start, end, spec.initial_cash, market.mark)

        self._eager = {"step": step, "restart": restart_}
        self._compiled: dict[str, Callable] = {
            name: torch.compile(fn, fullgraph=True, dynamic=False, options=_OPTIONS)
            for name, fn in self._eager.items()
        }
        self.failed = False  # True once compiling failed: eager from then on
        self._working: set[str] = set()  # the functions that compiled and ran

    def step(self, state: VecState, actions: torch.Tensor):
        return self._call("step", state, actions)

    def restart(self, state: VecState, done, start, end):
        return self._call("restart", state, done, start, end)

    def _call(self, name: str, *args):
        # The compiled functions always see normal tensors in normal mode, whatever mode
        # the caller is in (an agent acting under torch.inference_mode): torch.compile
        # guards on both, and every mix would compile again, up to its recompile limit.
        with torch.inference_mode(False):
            return self._run(name, *(_normal(a) for a in args))

    def _run(self, name: str, *args):
        if name in self._working:  # compiled and run once: errors from here on are real
            return self._compiled[name](*args)
        if not self.failed:
            try:
                result = self._compiled[name](*args)
                self._working.add(name)
                return result
            except Exception as exc:  # noqa: BLE001 - any failure: the eager functions
                self.failed = True
                warnings.warn(
                    f"compiling the vector env's {name} failed ({type(exc).__name__}: {exc}); "
                    "running it eagerly",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self._eager[name](*args)


def _normal(x):
    """``x`` (a tensor or a tuple of them) with inference tensors copied to normal ones."""
    if isinstance(x, torch.Tensor):
        return x.clone() if x.is_inference() else x
    if isinstance(x, tuple):
        return type(x)(*(_normal(v) for v in x)) if hasattr(x, "_fields") else x
    return x
