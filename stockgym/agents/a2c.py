"""A2C (Mnih et al. 2016, the synchronous advantage actor-critic), CleanRL-style: short
rollouts from a vector env, n-step returns bootstrapped from the critic, one gradient
step per rollout on the policy-gradient, value and entropy terms.

Actions: ``Discrete``, ``MultiDiscrete`` and ``Box`` (as PPO's, see
:mod:`stockgym.agents.networks`). Networks as PPO's (``shared_encoder``): on a stockgym
env actor and critic share one backbone with two heads, ``params(s) = head_pi(enc(s))``,
``V(s) = head_v(enc(s))``; on a plain vector observation each has its own.

A2C is PPO without the ratio clipping and the reuse of a batch: every rollout is used for
exactly one gradient step, so the data is always on-policy and no importance ratio is
needed. Optimiser: Adam (as every agent here; SB3's A2C uses RMSprop).

One update, as :meth:`A2C._learn` does it:

1. Collect ``num_steps`` (n) steps from each of ``num_envs`` envs with the current
   policy, storing observations, actions, values, rewards and episode ends.
2. ``next_values[t]``: the value of what follows step t in the same episode -
   ``V(obs[t+1])`` if the episode goes on, ``V(final_obs[t])`` if it was truncated (time
   limit / end of data: the future is cut off, not zero), ``0`` if it terminated. The
   n-step returns (:func:`nstep_returns`), backwards from the rollout's last step::

       R_t = r_t + gamma * next_values[t]     at the rollout's last step or an episode end
       R_t = r_t + gamma * R_{t+1}            otherwise

   so ``R_t = r_t + gamma r_{t+1} + ... + gamma^(k-1) r_{t+k-1} + gamma^k V(s_{t+k})``
   with ``k <= n`` the steps left in the rollout or the episode. Advantages
   ``A_t = R_t - V(s_t)`` (optionally normalised over the batch).
3. One gradient step (autograd, global-norm clipping, Adam) on
   ``L = -mean[log pi(a_t|s_t) A_t] + vf_coef * mean[(V(s_t) - R_t)^2]
   - ent_coef * mean[H(pi(.|s_t))]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from stockgym.agents.actor_critic import ActorCriticAgent, explained_variance
from stockgym.agents.base import Callback
from stockgym.agents.config import CommonConfig
from stockgym.agents.monitor import EpisodeStats, SPSMeter
from stockgym.agents.networks import check_policy_options
from stockgym.core import check_int, check_number


@dataclass
class A2CConfig(CommonConfig):
    """A2C hyperparameters (plus :class:`~stockgym.agents.config.CommonConfig`'s).

    ``num_steps``: n, the steps per env per rollout and the longest return before the
    bootstrap (batch = ``num_steps * num_envs``, one gradient step each); ``gamma``;
    ``ent_coef`` (weight of the entropy bonus), ``vf_coef`` (weight of the value loss);
    ``norm_adv``: normalise the advantages of each batch (SB3's A2C does not by default);
    ``anneal_lr``: learning rate falls linearly to 0 over each ``learn`` call;
    ``shared_encoder``, ``precision``, ``squash`` and ``log_std_init`` as
    :class:`~stockgym.agents.ppo.PPOConfig`'s.
    """

    learning_rate: float = 7e-4
    num_steps: int = 5
    gamma: float = 0.99
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    norm_adv: bool = False
    anneal_lr: bool = False
    squash: str = "clip"
    log_std_init: float = 0.0
    shared_encoder: bool | None = None
    precision: str = "float32"

    def validate(self) -> None:
        super().validate()
        check_int("num_steps", self.num_steps, 1)
        check_number("gamma", self.gamma, 0.0, 1.0)
        for name in ("ent_coef", "vf_coef"):
            check_number(name, getattr(self, name), 0.0)
        check_policy_options(self)


# ------------------------------------------------------------------ the maths
def nstep_returns(
    rewards: torch.Tensor, next_values: torch.Tensor, dones: torch.Tensor, gamma: float
) -> torch.Tensor:
    """n-step returns ``(T, N)`` of a rollout (see the module docstring).

    ``next_values[t]``: value of the state after step t within its episode (0 after a
    termination, ``V(final_obs)`` after a truncation, ``V(obs[t+1])`` otherwise; the last
    row: the value of the observation after the rollout); ``dones[t]``: the episode ended
    at step t (the return does not flow back across it).
    """
    returns = torch.empty_like(rewards)
    future = next_values[-1]  # the bootstrap after the rollout's last step
    for t in reversed(range(rewards.shape[0])):
        future = rewards[t] + gamma * torch.where(dones[t], next_values[t], future)
        returns[t] = future
    return returns


# ------------------------------------------------------------------ the agent
class A2C(ActorCriticAgent):
    """Synchronous advantage actor-critic (see the module docstring and :class:`A2CConfig`)."""

    algo = "a2c"
    Config = A2CConfig
    config: A2CConfig

    def _learn(self, total_timesteps: int, callback: Callback | None) -> None:
        """The loop of the module docstring."""
        c, env, log = self.config, self.env, self.logger
        actor, opt = self.nets["actor"], self.optimizer
        N, T = env.num_envs, c.num_steps
        batch = N * T
        num_updates = max(1, math.ceil(total_timesteps / batch))  # whole rollouts
        # updates this learn call already made (> 0 only when resuming from a checkpoint)
        done_updates = (self.num_timesteps - self.schedule["start"]) // batch
        raw_shape = self.dist.raw_shape()
        buf = self.new_buffer()
        stats = EpisodeStats(N, self.device)
        sps = SPSMeter(self.num_timesteps)
        obs = self._reset_env()

        for update in range(done_updates + 1, num_updates + 1):
            lr = c.learning_rate * (1.0 - (update - 1.0) / num_updates if c.anneal_lr else 1.0)
            for group in opt.param_groups:
                group["lr"] = lr

            # 1. rollout (ActorCriticAgent.rollout; values are recomputed with gradients in 3.)
            obs = self.rollout(buf, obs, stats)

            # 2. n-step returns (truncated episodes bootstrapped from their final observation)
            with torch.no_grad():
                returns = nstep_returns(buf.rewards, self.next_values(buf, obs), buf.dones, c.gamma)

            # 3. one gradient step on the whole batch
            b_obs = buf.obs.reshape(batch, -1)
            b_act = buf.actions.reshape(batch, *raw_shape)
            b_ret = returns.reshape(-1)
            params, values = self.policy_and_value(b_obs)
            logprob, entropy = self.dist.log_prob_entropy(params, actor.log_std, b_act)
            advantages = b_ret - values.detach()
            if c.norm_adv and batch > 1:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            policy_loss = -(logprob * advantages).mean()
            value_loss = ((values - b_ret) ** 2).mean()
            entropy_mean = entropy.mean()
            loss = policy_loss + c.vf_coef * value_loss - c.ent_coef * entropy_mean
            self._zero_grad()
            loss.backward()
            self._optimizer_step(c.max_grad_norm)

            # 4. log: the update's scalars in one host copy
            n = self.num_timesteps
            with torch.no_grad():
                explained = explained_variance(b_ret, buf.values.reshape(-1))
                vals = torch.stack(
                    [
                        policy_loss.detach(),
                        value_loss.detach(),
                        entropy_mean.detach(),
                        explained.to(value_loss.dtype),
                    ]
                ).tolist()
            log.scalar("charts/learning_rate", lr, n)
            for tag, v in zip(
                ("policy_loss", "value_loss", "entropy", "explained_variance"), vals, strict=True
            ):
                log.scalar(f"losses/{tag}", v, n)
            log.progress(n, sps(n), stats)
            if callback is not None and callback(self, n) is False:
                break
