"""PPO (Schulman et al. 2017), CleanRL-style: rollouts from a vector env, GAE(lambda)
with truncated episodes bootstrapped, clipped surrogate, optional value clipping,
entropy bonus, advantage normalisation, minibatch epochs, target-KL stop, LR annealing.

Actions: ``Discrete``, ``MultiDiscrete`` and ``Box`` (diagonal Gaussian; how samples are
squashed into the Box is described in :mod:`stockgym.agents.networks`).

Networks (``shared_encoder``): actor and critic share one backbone with two heads,
``params(s) = head_pi(enc(s))``, ``V(s) = head_v(enc(s))``, or each has its own
backbone. ``None`` (default) shares on a stockgym env (any backbone: each head keeps
a hidden layer of its own, as SB3's PPO with its default shared features extractor,
and one encoder pass serves both) and keeps them separate on a plain vector
observation such as CartPole's (where the encoder is the whole network). A pretrained
forecaster's weights go into the actor's backbone, the shared one when shared.

``precision="bfloat16"`` runs the networks under ``torch.autocast`` in bfloat16 (matrix
products, convolutions, the LSTM; losses, distributions, parameters and Adam stay
float32): about twice the CPU throughput of the ``cnn`` and ``lstm`` backbones on CPUs
with bfloat16 matrix units (AMX / AVX-512 BF16), at bfloat16's 8-bit mantissa in the
forward pass; slower for small ``mlp`` networks (the casts cost more than they save).

One update, as :meth:`PPO._learn` does it:

1. Collect ``num_steps`` steps from each of ``num_envs`` envs with the current policy,
   storing observations, actions, log-probs, values, rewards and episode ends.
2. ``next_values[t]``: the value of what follows step t in the same episode -
   ``V(obs[t+1])`` if the episode goes on, ``V(final_obs[t])`` if it was truncated
   (time limit / end of data: the future is cut off, not zero), ``0`` if it terminated.
   Then (:func:`compute_gae`)
   ``delta_t = r_t + gamma * next_values[t] - V(obs[t])`` and
   ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}``; returns ``A_t + V(obs[t])``.
3. ``update_epochs`` passes over the batch in ``num_minibatches`` shuffled minibatches,
   minimising (:func:`ppo_losses`)
   ``L = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) + vf_coef * L_V - ent_coef * H``
   with ``ratio = pi(a|s) / pi_old(a|s)``, by autograd, global-norm gradient clipping and
   Adam; stops early when the approximate KL exceeds ``target_kl``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch

from stockgym.agents.actor_critic import ActorCriticAgent, explained_variance
from stockgym.agents.base import Callback
from stockgym.agents.config import CommonConfig
from stockgym.agents.monitor import EpisodeStats, SPSMeter
from stockgym.agents.networks import check_policy_options
from stockgym.core import check_int, check_number

#: Tuned defaults per Gymnasium env id (:meth:`PPOConfig.for_env`). ``CartPole-v1`` (a
#: learning sanity check): the tanh MLP with orthogonal init of SB3 / CleanRL, rl-zoo3's
#: short horizon, and no value clipping (returns reach ~50 while a clipped value loss
#: moves the value only ``clip_coef`` per update). How they were chosen:
#: docs/benchmarks.md.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {
        "activation": "tanh",
        "num_envs": 32,
        "num_steps": 32,
        "num_minibatches": 4,
        "update_epochs": 5,
        "learning_rate": 3e-3,
        "gamma": 0.98,
        "gae_lambda": 0.8,
        "clip_vloss": False,
    },
}


@dataclass
class PPOConfig(CommonConfig):
    """PPO hyperparameters (plus :class:`~stockgym.agents.config.CommonConfig`'s).

    ``num_steps``: steps per env per rollout (batch = ``num_steps * num_envs``);
    ``shared_encoder``: one backbone for actor and critic (``None``: on stockgym envs,
    see the module docstring); ``precision``: ``float32 | bfloat16`` (autocast);
    ``anneal_lr``: learning rate falls linearly to 0 over each ``learn`` call;
    ``gamma``, ``gae_lambda``; ``num_minibatches``, ``update_epochs``; ``norm_adv``:
    normalise advantages per minibatch; ``clip_coef``: surrogate clip epsilon;
    ``clip_vloss``: clip the value update to ``clip_coef`` around the old value;
    ``ent_coef``, ``vf_coef``; ``target_kl``: stop the epochs when the approximate KL
    exceeds it (``None``: never); ``squash`` (``clip | tanh``) and ``log_std_init``
    for Box actions.
    """

    learning_rate: float = 3e-4
    num_steps: int = 128
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    norm_adv: bool = True
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    target_kl: float | None = None
    squash: str = "clip"
    log_std_init: float = 0.0
    shared_encoder: bool | None = None
    precision: str = "float32"
    env_defaults: ClassVar[dict[str, dict[str, Any]]] = ENV_DEFAULTS

    def validate(self) -> None:
        super().validate()
        for name in ("num_steps", "num_minibatches", "update_epochs"):
            check_int(name, getattr(self, name), 1)
        for name in ("gamma", "gae_lambda"):
            check_number(name, getattr(self, name), 0.0, 1.0)
        for name in ("ent_coef", "vf_coef"):
            check_number(name, getattr(self, name), 0.0)
        check_number("clip_coef", self.clip_coef, 0.0, lo_open=True)
        if self.target_kl is not None:
            check_number("target_kl", self.target_kl, 0.0, lo_open=True)
        check_policy_options(self)
        if self.num_steps * self.num_envs < self.num_minibatches:
            raise ValueError(
                f"num_steps * num_envs = {self.num_steps * self.num_envs} is "
                f"smaller than num_minibatches = {self.num_minibatches}"
            )


# ------------------------------------------------------------------ the maths
def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns, all ``(T, N)``.

    ``next_values[t]``: value of the state after step t *within its episode* (0 after
    termination, ``V(final_obs)`` after truncation, ``V(obs[t+1])`` otherwise);
    ``dones[t]``: the episode ended at step t (no advantage flows back across it).
    """
    deltas = rewards + gamma * next_values - values  # every step's TD error at once
    decay = gamma * gae_lambda * (1.0 - dones.to(values.dtype))
    advantages = torch.empty_like(values)
    last = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        last = deltas[t] + decay[t] * last
        advantages[t] = last
    return advantages, advantages + values


class PPOLosses(NamedTuple):
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor | None
    clipfrac: torch.Tensor | None


def ppo_losses(
    new_logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    new_value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    clip_coef: float,
    clip_vloss: bool = True,
    norm_adv: bool = True,
    diagnostics: bool = True,
) -> PPOLosses:
    """The clipped-surrogate policy loss, the (optionally clipped) value loss, the mean
    entropy, and diagnostics (approximate KL ``E[(r - 1) - log r]``, clip fraction;
    ``None`` with ``diagnostics=False``: the training loop asks for them only where it
    logs them or checks ``target_kl``)."""
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()
    approx_kl = clipfrac = None
    if diagnostics:
        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - logratio).mean()
            clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    if norm_adv and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef)
    policy_loss = torch.max(pg1, pg2).mean()
    if clip_vloss:
        v_clipped = old_value + torch.clamp(new_value - old_value, -clip_coef, clip_coef)
        value_loss = 0.5 * torch.max((new_value - returns) ** 2, (v_clipped - returns) ** 2).mean()
    else:
        value_loss = 0.5 * ((new_value - returns) ** 2).mean()
    return PPOLosses(policy_loss, value_loss, entropy.mean(), approx_kl, clipfrac)


# ------------------------------------------------------------------ the agent
class PPO(ActorCriticAgent):
    """Proximal Policy Optimization (see the module docstring and :class:`PPOConfig`)."""

    algo = "ppo"
    Config = PPOConfig
    config: PPOConfig

    def _learn(self, total_timesteps: int, callback: Callback | None) -> None:
        """The loop of the module docstring."""
        c, env, log = self.config, self.env, self.logger
        actor, opt = self.nets["actor"], self.optimizer
        N, T = env.num_envs, c.num_steps
        batch = N * T
        num_updates = max(1, math.ceil(total_timesteps / batch))  # whole rollouts
        # updates this learn call already made (> 0 only when resuming from a checkpoint)
        done_updates = (self.num_timesteps - self.schedule["start"]) // batch
        minibatch = batch // c.num_minibatches
        raw_shape = self.dist.raw_shape()
        buf = self.new_buffer()
        stats = EpisodeStats(N, self.device)
        sps = SPSMeter(self.num_timesteps)
        obs = self._reset_env()

        for update in range(done_updates + 1, num_updates + 1):
            frac = 1.0 - (update - 1.0) / num_updates if c.anneal_lr else 1.0
            lr = c.learning_rate * frac
            for group in opt.param_groups:
                group["lr"] = lr

            # 1. rollout (ActorCriticAgent.rollout: obs, actions, log-probs, values, rewards)
            obs = self.rollout(buf, obs, stats)

            # 2. advantages (truncated episodes bootstrapped from their final observation)
            with torch.no_grad():
                next_values = self.next_values(buf, obs)
                advantages, returns = compute_gae(
                    buf.rewards, buf.values, next_values, buf.dones, c.gamma, c.gae_lambda
                )

            # 3. minibatch epochs
            b_obs, b_act = buf.obs.reshape(batch, -1), buf.actions.reshape(batch, *raw_shape)
            b_logp, b_adv = buf.logprobs.reshape(-1), advantages.reshape(-1)
            b_val, b_ret = buf.values.reshape(-1), returns.reshape(-1)
            stop = False
            for epoch in range(c.update_epochs):
                perm = torch.randperm(batch, generator=self.generator, device=self.device)
                for start in range(0, batch - minibatch + 1, minibatch):
                    mb = perm[start : start + minibatch]
                    params, new_value = self.policy_and_value(b_obs[mb])
                    new_logp, entropy = self.dist.log_prob_entropy(params, actor.log_std, b_act[mb])
                    # KL / clip fraction only where read: the last minibatch (logged)
                    # or every one with target_kl
                    last = epoch == c.update_epochs - 1 and start + 2 * minibatch > batch
                    losses = ppo_losses(
                        new_logp,
                        b_logp[mb],
                        b_adv[mb],
                        new_value,
                        b_val[mb],
                        b_ret[mb],
                        entropy,
                        c.clip_coef,
                        c.clip_vloss,
                        c.norm_adv,
                        diagnostics=last or c.target_kl is not None,
                    )
                    loss = losses.policy - c.ent_coef * losses.entropy + c.vf_coef * losses.value
                    self._zero_grad()
                    loss.backward()
                    self._optimizer_step(c.max_grad_norm)
                    if c.target_kl is not None and float(losses.approx_kl) > c.target_kl:
                        stop = True
                        break
                if stop:
                    break

            # 4. log: the update's scalars in one host copy
            step_n = self.num_timesteps
            with torch.no_grad():
                explained = explained_variance(b_ret, b_val)
                vals = torch.stack(
                    [
                        losses.value.detach(),
                        losses.policy.detach(),
                        losses.entropy.detach(),
                        losses.approx_kl,
                        losses.clipfrac,
                        explained.to(losses.value.dtype),
                    ]
                ).tolist()
            log.scalar("charts/learning_rate", lr, step_n)
            for tag, v in zip(
                (
                    "value_loss",
                    "policy_loss",
                    "entropy",
                    "approx_kl",
                    "clipfrac",
                    "explained_variance",
                ),
                vals,
                strict=True,
            ):
                log.scalar(f"losses/{tag}", v, step_n)
            log.progress(step_n, sps(step_n), stats)
            if callback is not None and callback(self, step_n) is False:
                break
