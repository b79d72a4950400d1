"""Tabular Q-learning (Watkins 1989) on a discretised stock observation: a teaching
baseline, and the reason the other agents approximate Q or pi with networks.

**State.** A stockgym observation is ``window x features`` real numbers plus the
portfolio (:mod:`stockgym.agents.networks`); a table needs a small finite set of states.
:class:`Discretiser` keeps only

* the feature ``return_feature`` (default ``log_return``) of the ``lags`` latest bars,
  each cut into ``len(return_edges) + 1`` bins, and
* the asset's current portfolio weight, cut into ``len(position_edges) + 1`` bins,

where a value's bin is the number of edges ``<=`` it. The edges are in the observation's
units: in a ``stockgym train`` run (standard scaler fitted on the training period) the
log return is a z-score, and the default edges ``(-0.67, 0, 0.67)`` are the quartiles of a
standard normal (the sign and "large or small" of the last move); the default position
edges ``(-0.5, 0.5)`` split short / flat / long. The state index is the mixed-radix number
``s = ((p * B + b_1) * B + b_2) ... * B + b_lags`` (``p`` the position bin, ``b_1`` the
bin of the latest bar's return, ``b_2`` the bar before's..., ``B`` the number of return
bins, ``P`` of position bins), so the table has ``B ** lags * P`` rows and one column
per action: 4 x 3 = 12 rows by default.

**Why function approximation.** Everything else in the observation (the other features,
older bars, the size of a move inside its bin) is thrown away, and the table grows as
``B ** lags``: 4 bins over a 5-bar window are 3,072 rows, over 30 bars ~3.5e18, while a
training period holds a few thousand days. A state that was never visited keeps
``q_init`` and says nothing, because a table does not generalise between neighbouring
states; a network's ``Q(s, a)`` does, which is what DQN, PPO and A2C buy.

**Learning.** Every vector step (one transition per env):

1. act epsilon-greedily: with probability ``epsilon`` a uniform random action, else
   ``argmax_a Q[s, a]`` (ties: the first action); ``epsilon`` falls linearly from
   ``start_e`` to ``end_e`` over ``exploration_fraction * total_timesteps`` steps;
2. for each env's transition ``(s, a, r, s')`` in turn, the Bellman update
   (:func:`q_learning_update`) with step size ``alpha = learning_rate``::

       Q[s, a] += alpha * (r + gamma * max_a' Q[s', a'] - Q[s, a])

   where ``s'`` is the state of the observation that ended the episode when one ended;
   a real termination drops the ``max_a' Q[s', a']`` term, a truncation (end of data,
   time limit) keeps it.

No gradients and no optimiser: the table is changed in place. ``Discrete`` actions on a
single-asset stockgym env only. The table (``nets["q"].table``) and the visit counts
(``nets["q"].visits``) are tensors of the checkpoint's model state, so ``save`` /
``load`` / run checkpoints and ``resume`` work as for every agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from stockgym.agents.base import Callback
from stockgym.agents.config import CommonConfig
from stockgym.agents.epsilon_greedy import EpsilonGreedyAgent
from stockgym.agents.monitor import EpisodeStats, SPSMeter
from stockgym.core import check_int, check_number


@dataclass
class QLearningConfig(CommonConfig):
    """Tabular Q-learning hyperparameters (see the module docstring).

    ``learning_rate``: alpha, the step size of the Bellman update; ``gamma``;
    ``return_feature``, ``lags``, ``return_edges`` (increasing), ``position_edges``
    (increasing): the discretisation; ``q_init``: the value every cell starts from;
    ``start_e``, ``end_e``, ``exploration_fraction`` (of each ``learn`` call's steps):
    the epsilon schedule. Of :class:`~stockgym.agents.config.CommonConfig`'s fields the
    network ones (``hidden_size``, ``num_layers``, ``kernel_size``, ``activation``,
    ``max_grad_norm``) do not apply; ``backbone`` must stay ``mlp`` and ``pretrained``
    unset.
    """

    learning_rate: float = 0.05
    gamma: float = 0.9
    return_feature: str = "log_return"
    lags: int = 1
    return_edges: list[float] = field(default_factory=lambda: [-0.67, 0.0, 0.67])
    position_edges: list[float] = field(default_factory=lambda: [-0.5, 0.5])
    q_init: float = 0.0
    start_e: float = 1.0
    end_e: float = 0.05
    exploration_fraction: float = 0.5

    def validate(self) -> None:
        super().validate()
        if self.backbone != "mlp" or self.pretrained:
            raise ValueError(
                "tabular Q-learning has no network: backbone and pretrained do not apply "
                f"(got backbone={self.backbone!r}, pretrained={self.pretrained!r})"
            )
        check_number("learning_rate", self.learning_rate, 0.0, 1.0, lo_open=True)
        for name in ("gamma", "start_e", "end_e", "exploration_fraction"):
            check_number(name, getattr(self, name), 0.0, 1.0)
        check_int("lags", self.lags, 1)
        check_number("q_init", self.q_init)
        if not isinstance(self.return_feature, str) or not self.return_feature:
            raise ValueError(f"return_feature must name a feature, got {self.return_feature!r}")
        for name in ("return_edges", "position_edges"):
            edges = getattr(self, name)
            if not isinstance(edges, (list, tuple)) or not edges:
                raise ValueError(f"{name} must be a non-empty list of numbers, got {edges!r}")
            for x in edges:
                check_number(name, x)
            if any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True)):
                raise ValueError(f"{name} must be strictly increasing, got {list(edges)}")
            setattr(self, name, [float(x) for x in edges])
        n_states = (len(self.return_edges) + 1) ** self.lags * (len(self.position_edges) + 1)
        if n_states > 1_000_000:
            raise ValueError(
                f"{n_states} table rows ((len(return_edges) + 1) ** lags * "
                f"(len(position_edges) + 1)): too many for a table, which is the point of "
                "function approximation (use DQN, PPO or A2C)"
            )


# ------------------------------------------------------------------ the maths
def q_learning_update(
    table: torch.Tensor,
    states: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    next_states: torch.Tensor,
    terminated: torch.Tensor,
    alpha: float,
    gamma: float,
) -> torch.Tensor:
    """Apply the transitions ``(s_i, a_i, r_i, s'_i, terminated_i)`` to ``table``
    ``(n_states, n_actions)`` in place, one after another (a later transition sees the
    earlier ones' changes, as if they came one at a time)::

        target = r_i + gamma * (1 - terminated_i) * max_a' Q[s'_i, a']
        Q[s_i, a_i] += alpha * (target - Q[s_i, a_i])

    Returns the TD errors ``target - Q[s_i, a_i]`` (before each update)."""
    td = torch.empty_like(rewards)
    for i in range(states.shape[0]):
        s, a, s2 = states[i], actions[i], next_states[i]
        target = rewards[i] + gamma * (1.0 - terminated[i].float()) * table[s2].max()
        td[i] = target - table[s, a]
        table[s, a] += alpha * td[i]
    return td


class Discretiser:
    """``obs (B, D) -> state index (B,)`` (see the module docstring), for an
    observation ``layout`` (:func:`stockgym.agents.spaces.layout_of`)."""

    def __init__(
        self, layout: dict[str, Any] | None, config: QLearningConfig, device: torch.device
    ) -> None:
        c = config
        names = [] if layout is None else list(layout["feature_names"])
        if layout is None or c.return_feature not in names:
            raise ValueError(
                f"tabular Q-learning reads the feature {c.return_feature!r} of a stockgym "
                f"env's observation; this env has "
                f"{'no stockgym observation layout' if layout is None else f'features {names}'}"
            )
        if layout["n_assets"] != 1:
            raise ValueError(
                f"tabular Q-learning trades one asset, the env has {layout['n_assets']}"
            )
        window, row = layout["window"], layout["n_assets"] * layout["n_features"]
        if c.lags > window:
            raise ValueError(f"lags={c.lags} is more than the env's window of {window} bars")
        j = names.index(c.return_feature)
        # the flat observation is (window, features) row-major, latest bar last, then the
        # asset's weight and the cash fraction
        cols = [(window - 1 - k) * row + j for k in range(c.lags)]
        self.return_cols = torch.tensor(cols, device=device)
        self.position_col = window * row
        self.return_edges = torch.tensor(c.return_edges, device=device)
        self.position_edges = torch.tensor(c.position_edges, device=device)
        self.n_return_bins = len(c.return_edges) + 1
        self.n_position_bins = len(c.position_edges) + 1
        self.n_states = self.n_return_bins**c.lags * self.n_position_bins

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        returns = obs[:, self.return_cols].contiguous()
        # bucketize(right=True): the number of edges <= x
        r_bins = torch.bucketize(returns, self.return_edges, right=True)
        state = torch.bucketize(
            obs[:, self.position_col].contiguous(), self.position_edges, right=True
        )
        for k in range(r_bins.shape[1]):
            state = state * self.n_return_bins + r_bins[:, k]
        return state


class QTable(nn.Module):
    """The table ``Q[s, a]`` and how often each cell was updated, as buffers (tensors of
    the model state, no gradients)."""

    def __init__(self, n_states: int, n_actions: int, q_init: float) -> None:
        super().__init__()
        self.register_buffer("table", torch.full((n_states, n_actions), float(q_init)))
        self.register_buffer("visits", torch.zeros(n_states, n_actions, dtype=torch.int64))


# ------------------------------------------------------------------ the agent
class QLearning(EpsilonGreedyAgent):
    """Tabular Q-learning (see the module docstring and :class:`QLearningConfig`)."""

    algo = "qlearning"
    title = "tabular Q-learning"
    Config = QLearningConfig
    config: QLearningConfig

    def _build(self) -> nn.ModuleDict:
        self.discretise = Discretiser(self.encoder_spec["layout"], self.config, self.device)
        n_actions = int(self.action_space.n)
        return nn.ModuleDict({"q": QTable(self.discretise.n_states, n_actions, self.config.q_init)})

    def _after_build(self) -> None:
        self.epsilon = self.config.end_e

    def _make_optimizer(self) -> torch.optim.Optimizer:
        # the Bellman update changes the table in place; checkpoints keep an optimizer
        # state, so an SGD over the table stands in (never stepped: its state stays empty)
        self.params = []
        return torch.optim.SGD([self.nets["q"].table], lr=self.config.learning_rate)

    @property
    def table(self) -> torch.Tensor:
        """``Q[s, a]``, ``(n_states, n_actions)``."""
        return self.nets["q"].table

    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        return self.table[self.discretise(obs)].argmax(dim=1)

    def _learn(self, total_timesteps: int, callback: Callback | None) -> None:
        c, env, log = self.config, self.env, self.logger
        q = self.nets["q"]
        N = env.num_envs
        stats = EpisodeStats(N, self.device)
        sps = SPSMeter(self.num_timesteps)
        start = self.schedule["start"]  # this learn call's first step (kept across a resume)
        explore_steps = int(c.exploration_fraction * total_timesteps)
        next_log = self.num_timesteps + 1000  # scalars about every 1000 steps
        td_abs: list[float] = []
        obs = self._reset_env()

        while self.num_timesteps - start < total_timesteps:
            # 1. act epsilon-greedily (real_next: the final observation where one ended)
            actions, step, real_next = self._collect(obs, explore_steps, start)
            # 2. the Bellman update, one transition per env
            states, next_states = self.discretise(obs), self.discretise(real_next)
            td = q_learning_update(
                q.table,
                states,
                actions,
                step.reward.to(q.table.dtype) * c.reward_scale,
                next_states,
                step.terminated,
                c.learning_rate,
                c.gamma,
            )
            q.visits.index_put_((states, actions), torch.ones_like(actions), accumulate=True)
            td_abs.append(float(td.abs().mean()))
            obs = self._last_obs = step.obs  # _last_obs: what a checkpoint continues from
            self.num_timesteps += N
            stats.update(step, self.num_timesteps)  # device maths only; read at log time

            n = self.num_timesteps
            if n >= next_log or n - start >= total_timesteps:  # ~every 1000 steps, and last
                next_log = n + 1000
                log.scalar("losses/td_error", sum(td_abs) / len(td_abs), n)
                log.scalar("charts/epsilon", self.epsilon, n)
                log.scalar("charts/cells_visited", float((q.visits > 0).float().mean()), n)
                td_abs.clear()
                log.episodes(stats)
                env.check()
                log.progress(n, sps(n), stats)
            if callback is not None and callback(self, n) is False:
                break
        log.episodes(stats)
        self._last_obs = obs
