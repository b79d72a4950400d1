"""DQN (Mnih et al. 2015) with the usual improvements, CleanRL-style: a replay buffer on
the agent's device, a target network (hard copies or Polyak averaging), the Double-DQN
target (van Hasselt et al. 2016), Huber loss, a linear epsilon schedule, gradient
clipping, learning starts, a train frequency and optional decoupled weight decay
(AdamW). ``Discrete`` actions only.

Every vector step (one transition per env):

1. act epsilon-greedily: with probability ``epsilon`` a uniform random action, else
   ``argmax_a Q(obs, a)``; ``epsilon`` falls linearly from ``start_e`` to ``end_e`` over
   ``exploration_fraction * total_timesteps`` steps;
2. store ``(obs, a, r, next_obs, terminated)`` - ``next_obs`` is the observation that
   ended the episode where one ended (truncated episodes are bootstrapped; only a real
   termination stops the bootstrap);
3. after ``learning_starts`` steps, every ``train_frequency`` steps do
   ``gradient_steps`` updates on minibatches of ``batch_size``:
   ``y = r + gamma * (1 - terminated) * Q_target(next_obs, a*)`` with
   ``a* = argmax_a Q_online(next_obs, a)`` (Double DQN) or ``argmax_a Q_target`` (plain),
   loss ``Huber(Q_online(obs, a), y)``; after each update the target moves
   ``theta_target <- tau * theta + (1 - tau) * theta_target`` (``tau < 1``: Polyak) or, with
   ``tau = 1``, is copied every ``target_update_interval`` updates.

The update is written as CleanRL's ``dqn.py`` reads (:meth:`DQN._learn`): collect,
store, sample, TD target, loss, ``loss.backward()``, gradient clipping,
``optimizer.step()``, target update; autograd for every network and device.
``DQNConfig.for_env("CartPole-v1")`` holds settings tuned for time to a good policy
(:data:`ENV_DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stockgym.agents.base import Callback, make_adam
from stockgym.agents.buffers import ReplayBuffer
from stockgym.agents.config import CommonConfig
from stockgym.agents.epsilon_greedy import EpsilonGreedyAgent
from stockgym.agents.monitor import EpisodeStats, SPSMeter
from stockgym.agents.networks import Net
from stockgym.core import check_int, check_number

#: Tuned defaults per Gymnasium env id (:meth:`DQNConfig.for_env`). ``CartPole-v1`` (a
#: learning sanity check): frequent small updates from early on, a hard target copy,
#: short exploration. How they were chosen: docs/benchmarks.md.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {
        "hidden_size": 128,
        "learning_rate": 2.3e-3,
        "batch_size": 128,
        "learning_starts": 250,
        "train_frequency": 8,
        "gradient_steps": 2,
        "target_update_interval": 64,
        "exploration_fraction": 0.05,
        "end_e": 0.04,
    },
}


@dataclass
class DQNConfig(CommonConfig):
    """DQN hyperparameters (plus :class:`~stockgym.agents.config.CommonConfig`'s).

    ``buffer_size`` (transitions), ``batch_size``, ``gamma``; ``learning_starts``
    (env steps of pure exploration before the first update); ``train_frequency`` (env
    steps between training rounds, all envs counted) and ``gradient_steps`` per round;
    ``tau`` (1: hard target copies every ``target_update_interval`` gradient steps;
    < 1: Polyak averaging after every gradient step); ``double_dqn``; ``huber_delta``;
    ``start_e``, ``end_e``, ``exploration_fraction`` (of each ``learn`` call's steps);
    ``save_replay_buffer``: ``save`` also writes the replay buffer (its filled rows and
    write position), so ``DQN.load(dir, env=...)`` keeps learning from the same memory
    (a full buffer of ``buffer_size`` x 2 observations can make the checkpoint large);
    ``weight_decay``: decoupled L2 shrinkage of the Q-network's weights per update
    (AdamW, Loshchilov & Hutter 2019; 0: plain Adam) - on noisy rewards it keeps the
    network from memorising the noise of a short training period.
    """

    learning_rate: float = 2.5e-4
    max_grad_norm: float | None = 10.0
    buffer_size: int = 100_000
    batch_size: int = 128
    gamma: float = 0.99
    learning_starts: int = 1_000
    train_frequency: int = 4
    gradient_steps: int = 1
    tau: float = 1.0
    target_update_interval: int = 500
    double_dqn: bool = True
    huber_delta: float = 1.0
    start_e: float = 1.0
    end_e: float = 0.05
    exploration_fraction: float = 0.5
    save_replay_buffer: bool = False
    weight_decay: float = 0.0
    env_defaults: ClassVar[dict[str, dict[str, Any]]] = ENV_DEFAULTS

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.save_replay_buffer, bool):
            raise ValueError(
                f"save_replay_buffer must be true or false, got {self.save_replay_buffer!r}"
            )
        for name in (
            "buffer_size",
            "batch_size",
            "train_frequency",
            "gradient_steps",
            "target_update_interval",
        ):
            check_int(name, getattr(self, name), 1)
        check_int("learning_starts", self.learning_starts, 0)
        for name in ("gamma", "start_e", "end_e", "exploration_fraction"):
            check_number(name, getattr(self, name), 0.0, 1.0)
        check_number("tau", self.tau, 0.0, 1.0, lo_open=True)
        check_number("huber_delta", self.huber_delta, 0.0, lo_open=True)
        check_number("weight_decay", self.weight_decay, 0.0)


# ------------------------------------------------------------------ the maths
def dqn_target(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    next_q_target: torch.Tensor,
    gamma: float,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """TD targets ``(B,)``. ``next_q_target`` / ``next_q_online``: ``(B, n_actions)``
    Q-values of the next observations under the target / online network;
    ``terminated`` bool or 0/1.

    With ``next_q_online`` (Double DQN) the online network picks the next action and the
    target network values it: ``r + gamma * (1 - term) * Q_target(s', argmax_a Q_online(s', a))``;
    without it, ``r + gamma * (1 - term) * max_a Q_target(s', a)``.
    """
    if next_q_online is None:
        next_value = next_q_target.max(dim=1).values
    else:
        next_value = next_q_target.gather(1, next_q_online.argmax(1, keepdim=True)).squeeze(1)
    return rewards + gamma * (1.0 - terminated.float()) * next_value


def polyak_update(online: nn.Module, target: nn.Module, tau: float) -> None:
    """``target <- tau * online + (1 - tau) * target`` (``tau=1``: a copy)."""
    with torch.no_grad():
        for p, tp in zip(online.parameters(), target.parameters(), strict=True):
            tp.lerp_(p, tau)


# ------------------------------------------------------------------ the agent
class DQN(EpsilonGreedyAgent):
    """Deep Q-Network (see the module docstring and :class:`DQNConfig`)."""

    algo = "dqn"
    title = "DQN"
    Config = DQNConfig
    config: DQNConfig

    def _build(self) -> nn.ModuleDict:
        n = int(self.action_space.n)
        c = self.config
        return nn.ModuleDict(
            {
                "q": Net(self.encoder_spec, n, c.hidden_size, gain=1.0),
                "q_target": Net(self.encoder_spec, n, c.hidden_size, gain=1.0),
            }
        )

    def _after_build(self) -> None:
        self.nets["q_target"].load_state_dict(self.nets["q"].state_dict())
        self.nets["q_target"].requires_grad_(False)
        self.gradient_updates = 0
        self.epsilon = self.config.end_e
        #: env steps since the last training round (a checkpoint keeps it for a resume)
        self._pending = 0

    def _trainable(self) -> list[nn.Parameter]:
        return [p for p in self.nets["q"].parameters() if p.requires_grad]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        self.params = self._trainable()
        return make_adam(self.params, self.config.learning_rate, self.config.weight_decay)

    def _extra_state(self) -> dict:
        extra: dict = {"gradient_updates": self.gradient_updates, "pending": int(self._pending)}
        if self.config.save_replay_buffer and hasattr(self, "replay"):
            extra["replay_buffer"] = self.replay.state_dict()  # CPU tensors and ints
        return extra

    def _load_extra_state(self, extra: dict) -> None:
        self.gradient_updates = int(extra.get("gradient_updates", 0))
        self._pending = int(extra.get("pending", 0))
        if "replay_buffer" in extra:
            self.replay = ReplayBuffer.from_state_dict(
                extra["replay_buffer"], self.device, self.config.buffer_size
            )

    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        return self.nets["q"](obs).argmax(dim=1)

    def _learn(self, total_timesteps: int, callback: Callback | None) -> None:
        c, env, log = self.config, self.env, self.logger
        q, q_target, optimizer = self.nets["q"], self.nets["q_target"], self.optimizer
        if not hasattr(self, "replay") or self.replay.obs.shape[1] != env.obs_dim:
            self.replay = ReplayBuffer(c.buffer_size, env.obs_dim, self.device)
        rb = self.replay
        N = env.num_envs
        stats = EpisodeStats(N, self.device)
        sps = SPSMeter(self.num_timesteps)
        start = self.schedule["start"]  # this learn call's first step (kept across a resume)
        explore_steps = int(c.exploration_fraction * total_timesteps)
        if self.num_timesteps == start:  # a new call; a resumed one carries its count on
            self._pending = 0
        next_log = self.num_timesteps + 1000  # scalars about every 1000 steps
        last = None  # (loss, Q of the actions taken) of the latest update, for logging
        obs = self._reset_env()

        while self.num_timesteps - start < total_timesteps:
            # 1. collect: one epsilon-greedy step of every env
            actions, step, real_next = self._collect(obs, explore_steps, start)

            # 2. store (the final observation where an episode ended)
            rb.add(obs, actions, step.reward * c.reward_scale, real_next, step.terminated)
            obs = self._last_obs = step.obs  # _last_obs: what a checkpoint continues from
            self.num_timesteps += N
            stats.update(step, self.num_timesteps)  # device maths only; read at log time

            # 3. learn: gradient_steps updates per train_frequency env steps, once started
            updates = 0
            if self.num_timesteps - start >= c.learning_starts and rb.size >= c.batch_size:
                self._pending += N
                updates = self._pending // c.train_frequency * c.gradient_steps
                self._pending %= c.train_frequency
            for _ in range(updates):
                b_obs, b_act, b_rew, b_next, b_term = rb.sample(c.batch_size, self.generator)
                with torch.no_grad():
                    next_online = q(b_next) if c.double_dqn else None
                    y = dqn_target(b_rew, b_term, q_target(b_next), c.gamma, next_online)
                q_taken = q(b_obs).gather(1, b_act.unsqueeze(1)).squeeze(1)
                loss = F.huber_loss(q_taken, y, delta=c.huber_delta)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if c.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
                optimizer.step()
                self.gradient_updates += 1
                # 4. move the target network
                if c.tau < 1.0:
                    polyak_update(q, q_target, c.tau)
                elif self.gradient_updates % c.target_update_interval == 0:
                    polyak_update(q, q_target, 1.0)
                last = (loss.detach(), q_taken.detach())

            n = self.num_timesteps
            if n >= next_log:
                next_log = n + 1000
                if last is not None:
                    log.scalar("losses/td_loss", last[0].item(), n)
                    log.scalar("losses/q_values", last[1].mean().item(), n)
                log.scalar("charts/epsilon", self.epsilon, n)
                log.episodes(stats)
                env.check()
                log.progress(n, sps(n), stats)
            if callback is not None and callback(self, n) is False:
                break
        log.episodes(stats)
        self._last_obs = obs
