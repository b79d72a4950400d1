"""PPO (Schulman et al. 2017), CleanRL-style: rollouts from a vector env, GAE(lambda)
with truncated episodes bootstrapped, clipped surrogate, optional value clipping,
entropy bonus, advantage normalisation, minibatch epochs, target-KL stop, LR annealing.

Actions: ``Discrete``, ``MultiDiscrete`` and ``Box`` (diagonal Gaussian; how samples are
squashed into the Box is described in :mod:`stockgym.agents.networks`). Actor and
critic are separate networks, each with its own backbone.

One update, as the code below does it:

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
   with ``ratio = pi(a|s) / pi_old(a|s)``; stops early when the approximate KL exceeds
   ``target_kl``.

Speed: with ``Discrete`` actions and plain-MLP actor and critic on the CPU (an env
without a stockgym layout, e.g. CartPole), a minibatch step is computed in numpy over
the parameters' memory (:meth:`PPO._minibatch_mlp`, :mod:`stockgym.agents.numpy_mlp`):
the same losses with their gradients written out (:func:`ppo_grads`; equal to
autograd's up to float rounding, tested), one flat gradient buffer, one clipping norm
and PyTorch's fused Adam. Other networks and devices use autograd
(:meth:`PPO._minibatch_autograd`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from stockgym.agents import numpy_mlp
from stockgym.agents.base import Agent, Callback
from stockgym.agents.buffers import RolloutBuffer
from stockgym.agents.common import (
    CommonConfig,
    EpisodeStats,
    SPSMeter,
    _check_int,
    _check_number,
    clip_flat_grad,
)
from stockgym.agents.networks import SQUASH, ActionDist, Net, Policy, mlp_layers

#: Tuned defaults per Gymnasium env id (:meth:`PPOConfig.for_env`). ``CartPole-v1``:
#: tuned for wall-clock time to a mean deterministic evaluation return of 475 on 2 CPU
#: cores (``benchmarks/bench_sb3.py``; chosen on seeds 0-4 and 10-14, benchmarked on
#: 20-24): the tanh MLP with orthogonal init of SB3 / CleanRL (``activation="tanh"``; with
#: ReLU the same settings needed a median 34.8k steps instead of 16.4k on the tuning seeds,
#: missing 2 of 10 within 60k), 32 numpy-vectorized envs x 32 steps, 5 epochs of 4
#: minibatches of 256 at learning rate 3e-3 (annealed), rl-zoo3's short horizon (gamma
#: 0.98, lambda 0.8), and no value clipping (returns reach ~50 while a clipped value loss
#: lets the value move only ``clip_coef`` per update). 20 gradient steps per 1,024
#: samples, where the zoo takes 80 (20 full-batch epochs on 256): fewer env steps than
#: 1 minibatch x 10 epochs (which missed 475 within 60k steps on 5 of 10 tuning seeds)
#: at a quarter of the zoo's update cost.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {"activation": "tanh", "num_envs": 32, "num_steps": 32, "num_minibatches": 4,
                    "update_epochs": 5, "learning_rate": 3e-3, "gamma": 0.98, "gae_lambda": 0.8,
                    "clip_vloss": False},
}


@dataclass
class PPOConfig(CommonConfig):
    """PPO hyperparameters (plus :class:`~stockgym.agents.common.CommonConfig`'s).

    ``num_steps``: steps per env per rollout (batch = ``num_steps * num_envs``);
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
    env_defaults: ClassVar[dict[str, dict[str, Any]]] = ENV_DEFAULTS

    def validate(self) -> None:
        super().validate()
        for name in ("num_steps", "num_minibatches", "update_epochs"):
            _check_int(name, getattr(self, name), 1)
        for name in ("gamma", "gae_lambda"):
            _check_number(name, getattr(self, name), 0.0, 1.0)
        for name in ("ent_coef", "vf_coef"):
            _check_number(name, getattr(self, name), 0.0)
        _check_number("clip_coef", self.clip_coef, 0.0, lo_open=True)
        if self.target_kl is not None:
            _check_number("target_kl", self.target_kl, 0.0, lo_open=True)
        if self.squash not in SQUASH:
            raise ValueError(f"squash must be one of {SQUASH}, got {self.squash!r}")
        _check_number("log_std_init", self.log_std_init)
        if self.num_steps * self.num_envs < self.num_minibatches:
            raise ValueError(f"num_steps * num_envs = {self.num_steps * self.num_envs} is "
                             f"smaller than num_minibatches = {self.num_minibatches}")


# ------------------------------------------------------------------ the maths
def compute_gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor,
                dones: torch.Tensor, gamma: float, gae_lambda: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns, all ``(T, N)``.

    ``next_values[t]``: value of the state after step t *within its episode* (0 after
    termination, ``V(final_obs)`` after truncation, ``V(obs[t+1])`` otherwise);
    ``dones[t]``: the episode ended at step t (no advantage flows back across it).
    """
    dones = dones.to(values.dtype)
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        delta = rewards[t] + gamma * next_values[t] - values[t]
        last = delta + gamma * gae_lambda * (1.0 - dones[t]) * last
        advantages[t] = last
    return advantages, advantages + values


def bootstrap_values(values: torch.Tensor, last_value: torch.Tensor, terminated: torch.Tensor,
                     truncated: torch.Tensor, final_values: torch.Tensor) -> torch.Tensor:
    """``next_values`` for :func:`compute_gae` (all ``(T, N)``; ``last_value`` ``(N,)``:
    the value of the observation after the rollout; ``final_values[t]``: ``V(final_obs[t])``
    where ``truncated[t]``)."""
    nxt = torch.cat([values[1:], last_value.unsqueeze(0)])
    nxt = torch.where(truncated, final_values, nxt)
    return torch.where(terminated, torch.zeros_like(nxt), nxt)


class PPOLosses(NamedTuple):
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor | None
    clipfrac: torch.Tensor | None


def ppo_losses(new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor,
               new_value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor,
               entropy: torch.Tensor, clip_coef: float, clip_vloss: bool = True,
               norm_adv: bool = True, diagnostics: bool = True) -> PPOLosses:
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


#: what :meth:`PPO._minibatch_mlp` returns for a step without diagnostics: ``_learn``
#: reads only the losses of an epoch's last minibatch, or every step's approx_kl with
#: ``target_kl`` - both steps with diagnostics - so these are never read
_UNREAD = PPOLosses(*[torch.tensor(float("nan"))] * 3, None, None)


def _max_weights(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How ``max(x, y)`` passes its gradient on (as PyTorch's ``maximum``): all to the
    larger, half to each where they are equal."""
    tie = 0.5 * (x == y)
    return (x > y) + tie, (x < y) + tie


def ppo_grads(logits: np.ndarray, actions: np.ndarray, old_logprob: np.ndarray,
              advantages: np.ndarray, new_value: np.ndarray, old_value: np.ndarray,
              returns: np.ndarray, clip_coef: float, clip_vloss: bool, norm_adv: bool,
              ent_coef: float, vf_coef: float, terms: bool = True
              ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """:func:`ppo_losses` for ``Discrete`` actions in numpy, with the gradients of
    ``L = policy - ent_coef * entropy + vf_coef * value`` written out. ``logits (M, n)``
    and ``new_value (M,)`` are the networks' outputs on a minibatch of M rows.

    Returns (the loss terms and diagnostics as floats - ``{}`` with ``terms=False`` -,
    ``dL/dlogits (M, n)``, ``dL/dvalue (M,)``). With ``p = softmax(logits)``, ``r = pi / pi_old``:
    ``dL/dr = -A / M`` where the unclipped term is the larger one (and, for the clipped
    term, only inside the clip range; half each on ties, as autograd's ``max``),
    ``dL/dlogits = dL/dr * r * (onehot(a) - p) + ent_coef / M * p * (log p + H)``
    (the entropy's gradient is ``-p (log p + H)``), ``dL/dv = vf_coef * (v - R) / M``
    (value clipping: to the larger of the two squared errors, as for the policy)."""
    M = len(actions)
    rows = np.arange(M)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    entropy = -(p * logp).sum(axis=1)
    logratio = logp[rows, actions] - old_logprob
    ratio = np.exp(logratio)
    adv = advantages
    if norm_adv and M > 1:
        adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
    lo, hi = 1.0 - clip_coef, 1.0 + clip_coef
    pg1, pg2 = -adv * ratio, -adv * np.clip(ratio, lo, hi)
    w1, w2 = _max_weights(pg1, pg2)
    g_logp = -(adv / M) * (w1 + w2 * ((ratio >= lo) & (ratio <= hi))) * ratio
    g_logits = -p * g_logp[:, None]
    g_logits[rows, actions] += g_logp
    g_logits += (ent_coef / M) * p * (logp + entropy[:, None])
    err = new_value - returns
    if clip_vloss:
        step = new_value - old_value
        err_c = old_value + np.clip(step, -clip_coef, clip_coef) - returns
        sq1, sq2 = err * err, err_c * err_c
        v1, v2 = _max_weights(sq1, sq2)
        inside = (step >= -clip_coef) & (step <= clip_coef)
        g_value = (vf_coef / M) * (v1 * err + v2 * err_c * inside)
    else:
        sq1 = sq2 = err * err
        g_value = (vf_coef / M) * err
    out = {} if not terms else {
        "policy": float(np.maximum(pg1, pg2).mean()),
        "value": float(0.5 * np.maximum(sq1, sq2).mean()),
        "entropy": float(entropy.mean()),
        "approx_kl": float(((ratio - 1.0) - logratio).mean()),
        "clipfrac": float((np.abs(ratio - 1.0) > clip_coef).mean())}
    return out, g_logits.astype(np.float32, copy=False), g_value.astype(np.float32, copy=False)


# ------------------------------------------------------------------ the agent
class PPO(Agent):
    """Proximal Policy Optimization (see the module docstring and :class:`PPOConfig`)."""

    algo = "ppo"
    fused_adam = True
    Config = PPOConfig
    config: PPOConfig

    def _build(self) -> nn.ModuleDict:
        c = self.config
        self.dist = ActionDist(self.action_space, self.device, c.squash, c.log_std_init)
        return nn.ModuleDict({
            "actor": Policy(self.encoder_spec, self.dist, c.hidden_size),
            "critic": Net(self.encoder_spec, 1, c.hidden_size, gain=1.0),
        })

    def _predict(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        raw, _ = self.nets["actor"].act(obs, self.generator, deterministic)
        return self.dist.to_env(raw)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.nets["critic"](obs).squeeze(-1)

    def _evaluate(self, obs: torch.Tensor, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log-prob of raw, entropy)`` as ``Policy.evaluate`` computes them; for
        ``Discrete`` actions one log-softmax serves both (same values, fewer ops)."""
        actor = self.nets["actor"]
        if self.dist.kind != "discrete":
            return actor.evaluate(obs, raw)
        logp = torch.log_softmax(actor(obs), dim=-1)
        return (logp.gather(-1, raw.long().unsqueeze(-1)).squeeze(-1),
                -(logp.exp() * logp).sum(-1))

    #: numpy views of the actor's and critic's parameters (see Agent._bind_numpy)
    _NUMPY_VIEWS = (*Agent._NUMPY_VIEWS, "_np_actor", "_np_critic")

    def _bind_numpy(self) -> None:
        """``Discrete`` actions with plain-MLP actor and critic on the CPU: bind numpy views of their parameters for :meth:`_minibatch_mlp`
        (``_np_actor`` stays ``None`` otherwise)."""
        super()._bind_numpy()
        self._np_actor = self._np_critic = None
        if self.dist.kind != "discrete":
            return
        la, lc = mlp_layers(self.nets["actor"].net), mlp_layers(self.nets["critic"])
        aa, ac = numpy_mlp.mlp_arrays(la), numpy_mlp.mlp_arrays(lc)
        if aa is None or ac is None:
            return
        chain = [t for layers in (la, lc) for lin, _ in layers for t in (lin.weight, lin.bias)]
        # the chains must hold what is trained; other parameters (the MLP encoder's unused
        # forecaster head) get no gradient on either path
        if not {id(t) for t in chain} <= {id(t) for t in self.params}:
            return
        self._np_actor, self._np_critic, self._np_params = aa, ac, chain

    def _minibatch_autograd(self, obs: torch.Tensor, raw: torch.Tensor, old_logprob: torch.Tensor,
                            adv: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor,
                            diagnostics: bool) -> PPOLosses:
        """One gradient step on a minibatch (autograd); returns its losses."""
        c = self.config
        new_logprob, entropy = self._evaluate(obs, raw)
        losses = ppo_losses(new_logprob, old_logprob, adv, self.value(obs), old_value, returns,
                            entropy, c.clip_coef, c.clip_vloss, c.norm_adv, diagnostics=diagnostics)
        loss = losses.policy - c.ent_coef * losses.entropy + c.vf_coef * losses.value
        self._zero_grad()
        loss.backward()
        self._optimizer_step(c.max_grad_norm)
        return losses

    def _minibatch_mlp(self, obs: torch.Tensor, raw: torch.Tensor, old_logprob: torch.Tensor,
                       adv: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor,
                       diagnostics: bool) -> PPOLosses:
        """:meth:`_minibatch_autograd` in numpy for ``Discrete`` actions and plain-MLP
        networks on the CPU: forward passes (:func:`numpy_mlp.forward`), the loss
        gradients of :func:`ppo_grads`, backward passes (:func:`numpy_mlp.backward`) into
        one flat buffer, one clipping norm, the fused Adam step."""
        c = self.config
        x = obs.numpy()
        ha, hc = numpy_mlp.forward(self._np_actor, x), numpy_mlp.forward(self._np_critic, x)
        terms, g_logits, g_value = ppo_grads(
            ha[-1], raw.numpy(), old_logprob.numpy(), adv.numpy(), hc[-1][:, 0],
            old_value.numpy(), returns.numpy(), c.clip_coef, c.clip_vloss, c.norm_adv,
            c.ent_coef, c.vf_coef, terms=diagnostics)
        flat, grads = self._flat_grads(self._np_params)
        k = 2 * len(self._np_actor)
        numpy_mlp.backward(self._np_actor, ha, g_logits, grads[:k])
        numpy_mlp.backward(self._np_critic, hc, g_value[:, None], grads[k:])
        clip_flat_grad(flat, c.max_grad_norm)
        self._optimizer_step(None)
        if not diagnostics:  # a step whose losses nobody reads (see _learn): not computed
            return _UNREAD
        return PPOLosses(*torch.tensor(list(terms.values()), dtype=torch.float32).unbind())

    def _learn(self, total_timesteps: int, callback: Callback | None) -> None:
        """The loop of the module docstring. Kept lean because a small network's step is
        bound by per-op overhead, not arithmetic: rollout rows are written in place,
        each epoch gathers its shuffled batch once (minibatches are then contiguous
        slices, not six index copies each), the KL / clip-fraction diagnostics are
        computed only where they are logged (the last minibatch) or checked
        (``target_kl``), and the update's scalars reach the host in one copy."""
        c, env, log = self.config, self.env, self.logger
        actor, opt = self.nets["actor"], self.optimizer
        N, T = env.num_envs, c.num_steps
        batch = N * T
        num_updates = max(1, math.ceil(total_timesteps / batch))  # whole rollouts
        # updates this learn call already made (> 0 only when resuming from a checkpoint)
        done_updates = (self.num_timesteps - self.schedule["start"]) // batch
        minibatch = batch // c.num_minibatches
        starts = range(0, batch - minibatch + 1, minibatch)
        last_start = starts[-1]
        raw_shape = self.dist.raw_shape()
        buf = RolloutBuffer(T, N, env.obs_dim, raw_shape, self.dist.raw_dtype(), self.device)
        stats = EpisodeStats(N, self.device)
        sps = SPSMeter(self.num_timesteps)
        obs = self._reset_env()
        # Discrete actions, plain MLPs, CPU: minibatch steps in numpy (module docstring)
        minibatch_step = self._minibatch_autograd if self._np_actor is None \
            else self._minibatch_mlp

        for update in range(done_updates + 1, num_updates + 1):
            lr = c.learning_rate * (1.0 - (update - 1.0) / num_updates) if c.anneal_lr else c.learning_rate
            for group in opt.param_groups:
                group["lr"] = lr

            # 1. rollout
            with torch.no_grad():
                for t in range(T):
                    buf.obs[t] = obs
                    raw, logprob = actor.act(obs, self.generator)
                    buf.values[t] = self.value(obs)
                    step = env.step(self.dist.to_env(raw))
                    buf.actions[t] = raw
                    buf.logprobs[t] = logprob
                    torch.mul(step.reward, c.reward_scale, out=buf.rewards[t])
                    buf.terminated[t] = step.terminated
                    buf.truncated[t] = step.truncated
                    if step.final_obs is not None:
                        buf.final_obs[t] = step.final_obs
                    self.num_timesteps += N
                    log.episodes(stats, stats.update(step), self.num_timesteps)
                    obs = step.obs
            self._last_obs = obs

            # 2. advantages (truncated episodes bootstrapped from their final observation)
            with torch.no_grad():
                final_values = torch.zeros_like(buf.values)
                trunc = buf.truncated & ~buf.terminated
                if bool(trunc.any()):
                    final_values[trunc] = self.value(buf.final_obs[trunc])
                next_values = bootstrap_values(buf.values, self.value(obs), buf.terminated,
                                               trunc, final_values)
                advantages, returns = compute_gae(buf.rewards, buf.values, next_values,
                                                  buf.dones, c.gamma, c.gae_lambda)

            # 3. minibatch epochs
            flat = (buf.obs.reshape(batch, -1), buf.actions.reshape(batch, *raw_shape),
                    buf.logprobs.reshape(-1), advantages.reshape(-1), buf.values.reshape(-1),
                    returns.reshape(-1))
            b_values, b_returns = flat[4], flat[5]
            stop = False
            for epoch in range(c.update_epochs):
                perm = torch.randperm(batch, generator=self.generator, device=self.device)
                e_obs, e_act, e_logp, e_adv, e_val, e_ret = (x[perm] for x in flat)
                for start in starts:
                    mb = slice(start, start + minibatch)
                    diag = c.target_kl is not None or (epoch == c.update_epochs - 1
                                                       and start == last_start)
                    losses = minibatch_step(e_obs[mb], e_act[mb], e_logp[mb], e_adv[mb],
                                            e_val[mb], e_ret[mb], diag)
                    if c.target_kl is not None and float(losses.approx_kl) > c.target_kl:
                        stop = True
                        break
                if stop:
                    break

            # 4. log: the update's scalars in one host copy
            step_n = self.num_timesteps
            with torch.no_grad():
                var_y = b_returns.var()
                explained = torch.where(var_y > 0, 1.0 - (b_returns - b_values).var() / var_y,
                                        torch.nan)
                vals = torch.stack([losses.value.detach(), losses.policy.detach(),
                                    losses.entropy.detach(), losses.approx_kl, losses.clipfrac,
                                    explained.to(losses.value.dtype)]).tolist()
            log.scalar("charts/learning_rate", lr, step_n)
            for tag, v in zip(("value_loss", "policy_loss", "entropy", "approx_kl", "clipfrac",
                               "explained_variance"), vals, strict=True):
                log.scalar(f"losses/{tag}", v, step_n)
            log.progress(step_n, sps(step_n), stats)
            if callback is not None and callback(self, step_n) is False:
                break
