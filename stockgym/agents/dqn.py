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

Speed: a plain-MLP Q-network (an env without a stockgym layout, e.g. CartPole) trains
through :meth:`DQN._gradient_step_mlp`, the same update with its backward pass written out
(:func:`mlp_backward`; equal to autograd's, tested), gradients in one flat buffer and
PyTorch's fused Adam kernel called directly (``stockgym.agents.common.fused_adam_step``): for such small
networks per-call overhead, not arithmetic, is most of an update's time. Other networks
use autograd (:meth:`DQN._gradient_step`). ``DQNConfig.for_env("CartPole-v1")`` holds
settings tuned for time to a good policy (:data:`ENV_DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from stockgym.agents.base import Agent, Callback
from stockgym.agents.buffers import ReplayBuffer
from stockgym.agents.common import (
    CommonConfig,
    EpisodeStats,
    SPSMeter,
    _check_int,
    _check_number,
    linear_schedule,
)
from stockgym.agents.networks import Net, mlp_forward, mlp_layers

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
def dqn_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q_target: torch.Tensor,
               gamma: float, next_q_online: torch.Tensor | None = None) -> torch.Tensor:
    """TD targets ``(B,)``. ``next_q_target`` / ``next_q_online``: ``(B, n_actions)``
    Q-values of the next observations under the target / online network.

    With ``next_q_online`` (Double DQN) the online network picks the next action and the
    target network values it: ``r + gamma * (1 - term) * Q_target(s', argmax_a Q_online(s', a))``;
    without it, ``r + gamma * (1 - term) * max_a Q_target(s', a)``.
    """
    if next_q_online is not None:
        best = next_q_online.argmax(dim=1, keepdim=True)
        next_value = next_q_target.gather(1, best).squeeze(1)
    else:
        next_value = next_q_target.max(dim=1).values
    return rewards + gamma * (1.0 - terminated.float()) * next_value


def mlp_backward(layers: list[tuple[nn.Linear, str | None]], hs: list[torch.Tensor],
                 grad_out: torch.Tensor, out: list[torch.Tensor] | None = None
                 ) -> list[torch.Tensor]:
    """Gradients ``[dW1, db1, dW2, db2, ...]`` of a loss with ``d loss / d out =
    grad_out`` (its first ``len(grad_out)`` rows; rows of ``hs`` after those belong to
    other inputs and get no gradient): the chain rule written out, ``dz = dh * act'(z)``
    (relu: ``h > 0``; tanh: ``1 - h^2``; the aten kernels autograd itself uses),
    ``dW = dz^T h_in``, ``db = sum dz``, ``dh_in = dz W``. Written into ``out`` (tensors
    shaped like the parameters) when given."""
    rows = grad_out.shape[0]
    if out is None:
        out = [torch.empty_like(t) for lin, _ in layers for t in (lin.weight, lin.bias)]
    g = grad_out
    for i in range(len(layers) - 1, -1, -1):
        lin, act = layers[i]
        if act == "relu":
            g = torch.ops.aten.threshold_backward(g, hs[i + 1][:rows], 0)
        elif act == "tanh":
            g = torch.ops.aten.tanh_backward(g, hs[i + 1][:rows])
        torch.mm(g.t(), hs[i][:rows], out=out[2 * i])
        torch.sum(g, 0, out=out[2 * i + 1])
        if i > 0:
            g = g.mm(lin.weight)
    return out


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
        # plain-MLP Q-networks train through the written-out backward pass
        self._mlp = mlp_layers(self.nets["q"])
        self._mlp_target = mlp_layers(self.nets["q_target"])

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
        return self.nets["q"](obs).argmax(dim=1)

    def _explore(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Epsilon-greedy actions (random draws from the agent's generator)."""
        n = int(self.action_space.n)
        b = obs.shape[0]
        random_a = torch.randint(0, n, (b,), generator=self.generator, device=self.device)
        coin = torch.rand(b, generator=self.generator, device=self.device)
        return torch.where(coin < epsilon, random_a, self._greedy(obs))

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

    @torch.no_grad()
    def _gradient_step_mlp(self, rb: ReplayBuffer) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_gradient_step` for a plain-MLP Q-network (:func:`mlp_layers`): the
        same minibatch, targets, loss and gradients (equal to autograd's up to float
        rounding; tested), with the backward pass written out instead of recorded. For
        the small networks this serves, autograd's per-op bookkeeping costs more than
        the arithmetic, so an update is several times cheaper."""
        c, layers = self.config, self._mlp
        b_obs, b_act, b_rew, b_next, b_term = rb.sample(c.batch_size, self.generator)
        B = len(b_obs)
        hs = mlp_forward(layers, torch.cat([b_obs, b_next]))
        q_now, q_next = hs[-1][:B], hs[-1][B:]
        next_online = q_next if c.double_dqn else None
        y = dqn_target(b_rew, b_term, mlp_forward(self._mlp_target, b_next)[-1], c.gamma,
                       next_online)
        a = b_act.unsqueeze(1)
        q_taken = q_now.gather(1, a).squeeze(1)
        # d mean(Huber(q_taken - y)) / d q_taken; zero for the actions not taken
        td = q_taken - y
        g = td.clamp(-c.huber_delta, c.huber_delta).div_(B)
        flat, grads = self._mlp_grads()
        mlp_backward(layers, hs, torch.zeros_like(q_now).scatter_(1, a, g.unsqueeze(1)), grads)
        if c.max_grad_norm is not None:  # one norm over the one gradient buffer
            flat.mul_((c.max_grad_norm / (flat.norm() + 1e-6)).clamp_(max=1.0))
        return self._apply_gradients(td, q_taken, clipped=True)

    def _mlp_grads(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One flat gradient buffer for the MLP's parameters and its per-parameter views,
        set as their ``.grad`` (so clipping is one norm and one multiply)."""
        params = [t for lin, _ in self._mlp for t in (lin.weight, lin.bias)]
        views = getattr(self, "_grad_views", None)
        if views is None or any(p.grad is not v for p, v in zip(params, views, strict=True)):
            flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device)
            views = list(torch.split(flat, [p.numel() for p in params]))
            views = [v.view_as(p) for v, p in zip(views, params, strict=True)]
            for p, v in zip(params, views, strict=True):
                p.grad = v
            self._grad_flat, self._grad_views = flat, views
        return self._grad_flat, views

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
        c, env, log = self.config, self.env, self.logger
        N = env.num_envs
        if not hasattr(self, "replay") or self.replay.obs.shape[1] != env.obs_dim:
            self.replay = ReplayBuffer(c.buffer_size, env.obs_dim, self.device)
        rb = self.replay
        update = self._gradient_step if self._mlp is None else self._gradient_step_mlp
        stats = EpisodeStats(N, self.device)
        sps = SPSMeter(self.num_timesteps)
        obs = self._reset_env()
        start = self.schedule["start"]  # this learn call's first step (kept across a resume)
        explore_steps = int(c.exploration_fraction * total_timesteps)
        # env steps since the last training round (carried over when resuming mid-call)
        pending = getattr(self, "_pending", 0) if self.num_timesteps > start else 0
        next_log = self.num_timesteps + 1000  # scalars about every 1000 steps
        last = None

        while self.num_timesteps - start < total_timesteps:
            # 1. act
            self.epsilon = linear_schedule(c.start_e, c.end_e, explore_steps,
                                           self.num_timesteps - start)
            with torch.no_grad():
                actions = self._explore(obs, self.epsilon)
            step = env.step(actions + int(self.action_space.start))
            # 2. store (the final observation where an episode ended)
            real_next = step.obs if step.final_obs is None else torch.where(
                step.done.unsqueeze(1), step.final_obs, step.obs)
            rb.add(obs, actions, step.reward * c.reward_scale, real_next, step.terminated)
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
