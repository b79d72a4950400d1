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

Speed: a plain-MLP Q-network on the CPU (an env without a stockgym layout, e.g.
CartPole) acts and trains through :mod:`stockgym.agents.numpy_mlp`: the same update
(:meth:`DQN._gradient_step_mlp`) with the forward and backward passes in numpy over the
parameters' own memory (equal to autograd's up to float rounding, tested), gradients in
one flat buffer and PyTorch's fused Adam kernel called directly
(``stockgym.agents.common.fused_adam_step``). For such small networks per-call overhead
is a large part of an update's time, and a numpy call costs a quarter of a PyTorch one.
Other networks and
devices use autograd (:meth:`DQN._gradient_step`). ``DQNConfig.for_env("CartPole-v1")``
holds settings tuned for time to a good policy (:data:`ENV_DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from stockgym.agents import numpy_mlp
from stockgym.agents.base import Agent, Callback
from stockgym.agents.buffers import ReplayBuffer
from stockgym.agents.common import (
    CommonConfig,
    EpisodeStats,
    SPSMeter,
    _check_int,
    _check_number,
    clip_flat_grad,
    linear_schedule,
)
from stockgym.agents.networks import Net, mlp_layers

Array = torch.Tensor | np.ndarray

#: Tuned defaults per Gymnasium env id (:meth:`DQNConfig.for_env`). ``CartPole-v1``:
#: tuned for wall-clock time to a mean deterministic evaluation return of 195 with
#: ``learn(50_000)`` on 2 CPU cores (``benchmarks/bench_sb3.py``): 8 envs, an update of
#: 2 gradient steps every vector step (one update per 4 env steps, as rl-zoo3's 128
#: per 256 halved), learning from step 250, a hard target copy every 64 updates, and
#: exploration over the first 5% of the steps (2,500 of 50,000).
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {"hidden_size": 128, "learning_rate": 2.3e-3, "batch_size": 128,
                    "learning_starts": 250, "train_frequency": 8, "gradient_steps": 2,
                    "target_update_interval": 64, "exploration_fraction": 0.05,
                    "end_e": 0.04},
}


@dataclass
class DQNConfig(CommonConfig):
    """DQN hyperparameters (plus :class:`~stockgym.agents.common.CommonConfig`'s).

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
            raise ValueError(f"save_replay_buffer must be true or false, got {self.save_replay_buffer!r}")
        for name in ("buffer_size", "batch_size", "train_frequency", "gradient_steps",
                     "target_update_interval"):
            _check_int(name, getattr(self, name), 1)
        _check_int("learning_starts", self.learning_starts, 0)
        for name in ("gamma", "start_e", "end_e", "exploration_fraction"):
            _check_number(name, getattr(self, name), 0.0, 1.0)
        _check_number("tau", self.tau, 0.0, 1.0, lo_open=True)
        _check_number("huber_delta", self.huber_delta, 0.0, lo_open=True)
        _check_number("weight_decay", self.weight_decay, 0.0)


# ------------------------------------------------------------------ the maths
def dqn_target(rewards: Array, terminated: Array, next_q_target: Array, gamma: float,
               next_q_online: Array | None = None) -> Array:
    """TD targets ``(B,)``, as torch tensors or numpy arrays (all arguments one kind).
    ``next_q_target`` / ``next_q_online``: ``(B, n_actions)`` Q-values of the next
    observations under the target / online network; ``terminated`` bool or 0/1.

    With ``next_q_online`` (Double DQN) the online network picks the next action and the
    target network values it: ``r + gamma * (1 - term) * Q_target(s', argmax_a Q_online(s', a))``;
    without it, ``r + gamma * (1 - term) * max_a Q_target(s', a)``.
    """
    numpy = isinstance(next_q_target, np.ndarray)
    if next_q_online is None:
        next_value = next_q_target.max(1) if numpy else next_q_target.max(dim=1).values
    elif numpy:
        next_value = next_q_target[np.arange(len(next_q_target)), next_q_online.argmax(1)]
    else:
        next_value = next_q_target.gather(1, next_q_online.argmax(1, keepdim=True)).squeeze(1)
    live = 1.0 - (terminated.astype(next_value.dtype, copy=False) if numpy else terminated.float())
    return rewards + gamma * live * next_value


def polyak_update(online: nn.Module, target: nn.Module, tau: float) -> None:
    """``target <- tau * online + (1 - tau) * target`` (``tau=1``: a copy)."""
    with torch.no_grad():
        for p, tp in zip(online.parameters(), target.parameters(), strict=True):
            tp.lerp_(p, tau)


# ------------------------------------------------------------------ the agent
class DQN(Agent):
    """Deep Q-Network (see the module docstring and :class:`DQNConfig`)."""

    algo = "dqn"
    fused_adam = True
    Config = DQNConfig
    config: DQNConfig

    def _check_action_space(self, space: spaces.Space) -> None:
        if not isinstance(space, spaces.Discrete):
            raise ValueError(f"DQN needs a Discrete action space, the env has {space}; use PPO "
                             "or REINFORCE for MultiDiscrete and Box actions")

    def _build(self) -> nn.ModuleDict:
        n = int(self.action_space.n)
        c = self.config
        return nn.ModuleDict({
            "q": Net(self.encoder_spec, n, c.hidden_size, gain=1.0),
            "q_target": Net(self.encoder_spec, n, c.hidden_size, gain=1.0),
        })

    def _after_build(self) -> None:
        self.nets["q_target"].load_state_dict(self.nets["q"].state_dict())
        self.nets["q_target"].requires_grad_(False)
        self.gradient_updates = 0
        self.epsilon = self.config.end_e

    #: numpy views of the Q-networks' parameters (see Agent._bind_numpy)
    _NUMPY_VIEWS = (*Agent._NUMPY_VIEWS, "_mlp", "_mlp_target")

    def _bind_numpy(self) -> None:
        """Plain-MLP Q-networks on the CPU act and train in numpy (:mod:`numpy_mlp`):
        bind numpy views of their parameters (``_mlp`` stays ``None`` otherwise)."""
        super()._bind_numpy()
        layers = mlp_layers(self.nets["q"])
        self._mlp = numpy_mlp.mlp_arrays(layers)  # None: not a CPU float32 plain MLP
        self._mlp_target = numpy_mlp.mlp_arrays(mlp_layers(self.nets["q_target"]))
        self._mlp_params = [t for lin, _ in layers for t in (lin.weight, lin.bias)] \
            if self._mlp is not None else []

    def _trainable(self) -> list[nn.Parameter]:
        return [p for p in self.nets["q"].parameters() if p.requires_grad]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        if self.config.weight_decay == 0:
            return super()._make_optimizer()
        self.params = self._trainable()
        return torch.optim.AdamW(self.params, lr=self.config.learning_rate, eps=1e-5,
                                 weight_decay=self.config.weight_decay, foreach=True)

    def _extra_state(self) -> dict:
        extra: dict = {"gradient_updates": self.gradient_updates,
                       "pending": int(getattr(self, "_pending", 0))}
        if self.config.save_replay_buffer and hasattr(self, "replay"):
            extra["replay_buffer"] = self.replay.state_dict()  # CPU tensors and ints
        return extra

    def _load_extra_state(self, extra: dict) -> None:
        self.gradient_updates = int(extra.get("gradient_updates", 0))
        self._pending = int(extra.get("pending", 0))
        if "replay_buffer" in extra:
            self.replay = ReplayBuffer.from_state_dict(extra["replay_buffer"], self.device,
                                                       self.config.buffer_size)

    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        if self._mlp is not None:  # numpy (CPU only)
            return torch.from_numpy(numpy_mlp.forward(self._mlp, obs.numpy())[-1].argmax(1))
        return self.nets["q"](obs).argmax(dim=1)

    def _explore(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Epsilon-greedy actions from one draw of ``2 x B`` uniforms ``u`` (the agent's
        generator): where ``u[0] < epsilon`` the action ``floor(u[1] * n)``, a uniform
        one, else the greedy one."""
        n = int(self.action_space.n)
        u = torch.rand(2, obs.shape[0], generator=self.generator, device=self.device)
        if self._mlp is not None:  # numpy (CPU only), as the updates
            u = u.numpy()
            random_a = np.minimum(u[1] * n, n - 1).astype(np.int64)
            return torch.from_numpy(np.where(u[0] < epsilon, random_a, self._greedy(obs).numpy()))
        random_a = (u[1] * n).long().clamp_(max=n - 1)
        return torch.where(u[0] < epsilon, random_a, self._greedy(obs))

    def _predict(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        a = self._greedy(obs) if deterministic else self._explore(obs, self.epsilon)
        return a + int(self.action_space.start)

    def _gradient_step(self, rb: ReplayBuffer) -> tuple[torch.Tensor, torch.Tensor]:
        """One update of the online network on a replay minibatch, then the target
        network's update; returns (TD errors, Q of the actions taken)."""
        c, q, q_target = self.config, self.nets["q"], self.nets["q_target"]
        b_obs, b_act, b_rew, b_next, b_term = rb.sample(c.batch_size, self.generator)
        q_now, q_next = q(torch.cat([b_obs, b_next])).split(len(b_obs))
        with torch.no_grad():
            next_online = q_next if c.double_dqn else None
            y = dqn_target(b_rew, b_term, q_target(b_next), c.gamma, next_online)
        q_taken = q_now.gather(1, b_act.unsqueeze(1)).squeeze(1)
        loss = F.huber_loss(q_taken, y, delta=c.huber_delta)
        self._zero_grad()
        loss.backward()
        return self._apply_gradients((q_taken - y).detach(), q_taken.detach())

    def _gradient_step_mlp(self, rb: ReplayBuffer) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_gradient_step` for a plain-MLP Q-network on the CPU: the same
        minibatch, targets, loss and gradients (equal to autograd's up to float rounding;
        tested), computed in numpy (:mod:`stockgym.agents.numpy_mlp`) over the parameters'
        memory, then the same clipping and Adam step."""
        c = self.config
        b_obs, b_act, b_rew, b_next, b_term = rb.sample_arrays(c.batch_size, self.generator)
        B = len(b_obs)
        hs = numpy_mlp.forward(self._mlp, np.concatenate([b_obs, b_next]))
        q_now, q_next = hs[-1][:B], hs[-1][B:]
        q_next_target = numpy_mlp.forward(self._mlp_target, b_next)[-1]
        y = dqn_target(b_rew, b_term, q_next_target, c.gamma, q_next if c.double_dqn else None)
        rows = np.arange(B)
        q_taken = q_now[rows, b_act]
        # d mean(Huber(q_taken - y)) / d q_taken; zero for the actions not taken
        td = q_taken - y
        grad_q = np.zeros_like(q_now)
        grad_q[rows, b_act] = np.clip(td, -c.huber_delta, c.huber_delta) / B
        flat, grads = self._flat_grads(self._mlp_params)
        numpy_mlp.backward(self._mlp, hs, grad_q, grads)
        clip_flat_grad(flat, c.max_grad_norm)
        return self._apply_gradients(torch.from_numpy(td), torch.from_numpy(q_taken), clipped=True)

    def _apply_gradients(self, td: torch.Tensor, q_taken: torch.Tensor, clipped: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip (unless ``clipped``), step the optimizer, move the target network; returns
        ``(td, q_taken)`` (TD errors and Q-values of the minibatch, for :meth:`_log_update`)."""
        c, q, q_target = self.config, self.nets["q"], self.nets["q_target"]
        self._optimizer_step(None if clipped else c.max_grad_norm)
        self.gradient_updates += 1
        if c.tau < 1.0:
            polyak_update(q, q_target, c.tau)
        elif self.gradient_updates % c.target_update_interval == 0:
            polyak_update(q, q_target, 1.0)
        return td, q_taken

    def _log_update(self, last: tuple[torch.Tensor, torch.Tensor], step: int) -> None:
        """The latest update's TD loss and mean Q (computed only when logged)."""
        td, q_taken = last
        loss = F.huber_loss(td, torch.zeros_like(td), delta=self.config.huber_delta)
        self.logger.scalar("losses/td_loss", loss.item(), step)
        self.logger.scalar("losses/q_values", q_taken.mean().item(), step)

    def _learn(self, total_timesteps: int, callback: Callback | None) -> None:
        obs_dim = self.env.obs_dim
        if not hasattr(self, "replay") or self.replay.obs.shape[1] != obs_dim:
            self.replay = ReplayBuffer(self.config.buffer_size, obs_dim, self.device)
        rb = self.replay
        update = self._gradient_step if self._mlp is None else self._gradient_step_mlp
        c, env, log = self.config, self.env, self.logger
        N = env.num_envs
        stats = EpisodeStats(N, self.device)
        sps = SPSMeter(self.num_timesteps)
        obs = self._reset_env()
        start = self.schedule["start"]  # this learn call's first step (kept across a resume)
        explore_steps = int(c.exploration_fraction * total_timesteps)
        # env steps since the last training round (carried over when resuming mid-call)
        pending = getattr(self, "_pending", 0) if self.num_timesteps > start else 0
        next_log = self.num_timesteps + 1000  # scalars about every 1000 steps
        last = None
        start_action = int(self.action_space.start)

        while self.num_timesteps - start < total_timesteps:
            # 1. act
            self.epsilon = linear_schedule(c.start_e, c.end_e, explore_steps,
                                           self.num_timesteps - start)
            with torch.no_grad():
                actions = self._explore(obs, self.epsilon)
            step = env.step(actions + start_action if start_action else actions)
            # 2. store (the final observation where an episode ended)
            real_next = step.obs if step.final_obs is None else torch.where(
                step.done.unsqueeze(1), step.final_obs, step.obs)
            reward = step.reward * c.reward_scale if c.reward_scale != 1.0 else step.reward
            rb.add(obs, actions, reward, real_next, step.terminated)
            obs = self._last_obs = step.obs  # _last_obs: what a checkpoint continues from
            self.num_timesteps += N
            log.episodes(stats, stats.update(step), self.num_timesteps)

            # 3. learn: every train_frequency steps once learning has started
            if self.num_timesteps - start >= c.learning_starts and rb.size >= c.batch_size:
                pending += N
                while pending >= c.train_frequency:
                    pending -= c.train_frequency
                    for _ in range(c.gradient_steps):
                        last = update(rb)
                self._pending = pending

            n = self.num_timesteps
            if n >= next_log:
                next_log = n + 1000
                if last is not None:
                    self._log_update(last, n)
                log.scalar("charts/epsilon", self.epsilon, n)
                log.progress(n, sps(n), stats)
            if callback is not None and callback(self, n) is False:
                break
        self._last_obs = obs
