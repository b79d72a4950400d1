"""REINFORCE (Williams 1992): Monte-Carlo policy gradient over whole episodes, with a
baseline and an entropy bonus, on batches of episodes from a vector env.
``Discrete``, ``MultiDiscrete`` and ``Box`` actions (as PPO's, see
:mod:`stockgym.agents.networks`). The learned baseline shares the policy's backbone
(a value head beside the policy head) as PPO's critic does: ``shared_encoder``
(``None``: shared on stockgym envs, separate on plain vectors); ``precision`` as PPO's.

One update:

1. Reset the vector env and play one episode in each of its ``num_envs`` envs with the
   current policy (an env whose episode has ended keeps stepping until all have ended;
   its later steps are masked out). ``max_episode_steps`` cuts runaway episodes (a cut
   counts as a truncation). Whether all have ended is read from the device only from
   the longest an episode can last on (a stockgym vector env's episode length, or
   ``max_episode_steps``), so on a GPU the collection does not wait for it every step.
2. Returns (:func:`discounted_returns`): ``G_t = r_t + gamma * G_{t+1}`` inside an
   episode; at its last step ``G_T = r_T`` after termination, and ``r_T + gamma * V(final_obs)``
   after truncation when the baseline is a learned value (otherwise ``r_T``).
3. Advantages ``A_t = G_t - b_t`` with the baseline ``b`` (``baseline``): ``"value"``, a
   learned ``V(obs_t)`` (fitted by MSE to ``G_t``), ``"mean"``: the batch mean of
   ``G``, or ``"none"``; optionally normalised.
4. One gradient step (autograd, global-norm clipping, Adam) on
   ``L = -mean_t[log pi(a_t|s_t) A_t] - ent_coef mean_t[H(pi(.|s_t))]
   + vf_coef mean_t[(V(s_t) - G_t)^2]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stockgym.agents.base import Agent, Callback
from stockgym.agents.config import CommonConfig
from stockgym.agents.monitor import EpisodeStats, SPSMeter
from stockgym.agents.networks import (
    ActionDist,
    autocast,
    build_actor_critic,
    check_policy_options,
    policy_and_value,
)
from stockgym.core import check_int, check_number
from stockgym.envs.trading import StockTradingEnv

BASELINES = ("value", "mean", "none")


@dataclass
class REINFORCEConfig(CommonConfig):
    """REINFORCE hyperparameters (plus :class:`~stockgym.agents.config.CommonConfig`'s).

    ``gamma``; ``baseline`` (``value | mean | none``); ``norm_adv`` (normalise the
    advantages of each batch); ``ent_coef``; ``vf_coef`` (weight of the value loss);
    ``max_episode_steps`` (cut episodes longer than this; ``None``: no cut);
    ``squash`` and ``log_std_init`` for Box actions; ``shared_encoder`` and
    ``precision`` as :class:`~stockgym.agents.ppo.PPOConfig`'s. One batch = one episode from each of
    ``num_envs`` envs.
    """

    learning_rate: float = 1e-3
    gamma: float = 0.99
    baseline: str = "value"
    norm_adv: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_episode_steps: int | None = None
    squash: str = "clip"
    log_std_init: float = 0.0
    shared_encoder: bool | None = None
    precision: str = "float32"

    def validate(self) -> None:
        super().validate()
        check_number("gamma", self.gamma, 0.0, 1.0)
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        for name in ("ent_coef", "vf_coef"):
            check_number(name, getattr(self, name), 0.0)
        if self.max_episode_steps is not None:
            check_int("max_episode_steps", self.max_episode_steps, 1)
        check_policy_options(self)


# ------------------------------------------------------------------ the maths
def discounted_returns(
    rewards: torch.Tensor, dones: torch.Tensor, gamma: float, tail: torch.Tensor | None = None
) -> torch.Tensor:
    """Monte-Carlo returns ``(T, N)`` of episodes stored along the time axis.

    ``dones[t]``: an episode ended at step t (the return does not flow back across it);
    ``tail[t]``: the value added (discounted once) after an episode's last step - 0 after
    termination, ``V(final_obs)`` to bootstrap a truncation (``None``: all zeros).
    The last row must end its episodes (or ``tail`` gives their continuation).
    """
    dones = dones.to(rewards.dtype)
    tail = torch.zeros_like(rewards) if tail is None else tail
    out = torch.zeros_like(rewards)
    future = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        future = rewards[t] + gamma * (dones[t] * tail[t] + (1.0 - dones[t]) * future)
        out[t] = future
    return out


# ------------------------------------------------------------------ the agent
class REINFORCE(Agent):
    """Monte-Carlo policy gradient (see the module docstring and :class:`REINFORCEConfig`)."""

    algo = "reinforce"
    Config = REINFORCEConfig
    config: REINFORCEConfig

    def _build(self) -> nn.ModuleDict:
        c = self.config
        self.dist = ActionDist(self.action_space, self.device, c.squash, c.log_std_init)
        return nn.ModuleDict(
            build_actor_critic(
                self.encoder_spec, self.dist, c.hidden_size, c.shared_encoder, c.baseline == "value"
            )
        )

    def _params(self, obs: torch.Tensor) -> torch.Tensor:
        """The policy's distribution parameters (float32)."""
        with autocast(obs.device, self.config.precision):
            return self.nets["actor"](obs).float()

    def _predict(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        raw, _ = self.nets["actor"].sample(self._params(obs), self.generator, deterministic)
        return self.dist.to_env(raw)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """The learned baseline ``V(obs)`` (``baseline="value"`` only)."""
        return policy_and_value(
            self.nets["actor"], self.nets["critic"], obs, self.config.precision
        )[1]

    def _horizon(self) -> int:
        """Steps before which some episode is surely still running: the episode length
        of a stockgym vector env (every episode lasts that long unless ruined) or
        ``max_episode_steps``, whichever is smaller; 1 when neither is known."""
        bounds = []
        env = getattr(self.env, "env", None)
        template = getattr(env, "template", None)
        if isinstance(template, StockTradingEnv):
            last, first = len(template.market.dates) - 1, template.window_size - 1
            length = template.episode_length
            bounds.append(length if length is not None else last - first)
        if self.config.max_episode_steps is not None:
            bounds.append(self.config.max_episode_steps)
        return min(bounds) if bounds else 1

    def _collect(self, stats: EpisodeStats) -> dict[str, torch.Tensor]:
        """One episode per env: stacked ``(T, N, ...)`` tensors and the ``alive`` mask
        (True on the steps of each env's episode)."""
        c, env = self.config, self.env
        obs = self._env_reset()
        N = env.num_envs
        alive = torch.ones(N, dtype=torch.bool, device=self.device)
        ep_return = torch.zeros(N, dtype=torch.float64, device=self.device)
        portfolio = None
        rows: dict[str, list[torch.Tensor]] = {
            k: []
            for k in ("obs", "actions", "rewards", "alive", "terminated", "truncated", "final_obs")
        }
        horizon = self._horizon()
        while True:
            with torch.inference_mode():  # acting: no autograd bookkeeping at all
                raw, _ = self.nets["actor"].sample(self._params(obs), self.generator)
                step = env.step(self.dist.to_env(raw))
            terminated, truncated = step.terminated & alive, step.truncated & alive
            if c.max_episode_steps is not None and len(rows["obs"]) + 1 >= c.max_episode_steps:
                truncated = alive & ~terminated  # cut: counts as a truncation
            done = terminated | truncated
            final = (
                step.obs
                if step.final_obs is None
                else torch.where(step.done.unsqueeze(1), step.final_obs, step.obs)
            )
            for key, value in (
                ("obs", obs),
                ("actions", raw),
                ("alive", alive),
                ("rewards", step.reward * c.reward_scale),
                ("terminated", terminated),
                ("truncated", truncated),
                ("final_obs", final),
            ):
                rows[key].append(value)
            ep_return += torch.where(alive, step.reward, 0.0)
            pv = step.info.get("portfolio_value")
            if isinstance(pv, torch.Tensor):
                # where an episode ended, the same-step autoreset has already reset the
                # top-level info: the value it ended with is in final_info
                final = step.info.get("final_info")
                if isinstance(final, dict) and "portfolio_value" in final:
                    pv = torch.where(step.done, final["portfolio_value"], pv)
                pv = pv.to(self.device)
                portfolio = torch.where(done, pv, pv if portfolio is None else portfolio)
            alive = alive & ~done
            obs = step.obs
            # every episode runs to the horizon unless ruined: no host read before it
            if len(rows["obs"]) >= horizon and not bool(alive.any()):
                break
        batch = {k: torch.stack(v) for k, v in rows.items()}
        lengths = batch["alive"].sum(0)
        self.num_timesteps += int(lengths.sum())
        stats.add(
            ep_return.tolist(),
            lengths.tolist(),
            None if portfolio is None else portfolio.tolist(),
            self.num_timesteps,
        )
        return batch

    def _learn(self, total_timesteps: int, callback: Callback | None) -> None:
        c, log = self.config, self.logger
        actor, critic = self.nets["actor"], self.nets["critic"] if c.baseline == "value" else None
        stats = EpisodeStats(self.env.num_envs, self.device)
        sps = SPSMeter(self.num_timesteps)
        start = self.schedule["start"]  # this learn call's first step (kept across a resume)
        while self.num_timesteps - start < total_timesteps:
            batch = self._collect(stats)
            log.episodes(stats)
            self.env.check()
            mask = batch["alive"].float()
            T, N = mask.shape
            flat_obs = batch["obs"].reshape(T * N, -1)

            # returns: bootstrapped from V(final_obs) at truncations when a value is learned
            with torch.no_grad():
                tail = torch.zeros_like(mask)
                if critic is not None and bool(batch["truncated"].any()):
                    tr = batch["truncated"]
                    tail[tr] = self.value(batch["final_obs"][tr])
                dones = batch["terminated"] | batch["truncated"]
                returns = discounted_returns(batch["rewards"], dones, c.gamma, tail)

            flat_act = batch["actions"].reshape(T * N, *self.dist.raw_shape())
            if critic is not None:
                params, values = policy_and_value(actor, critic, flat_obs, c.precision)
                values = values.reshape(T, N)
            else:
                params = self._params(flat_obs)
            logprob, entropy = self.dist.log_prob_entropy(params, actor.log_std, flat_act)
            logprob, entropy = logprob.reshape(T, N), entropy.reshape(T, N)
            n_valid = mask.sum()
            value_loss = torch.zeros((), device=self.device)
            if critic is not None:
                advantages = returns - values.detach()
                value_loss = (((values - returns) ** 2) * mask).sum() / n_valid
            elif c.baseline == "mean":
                advantages = returns - (returns * mask).sum() / n_valid
            else:
                advantages = returns
            if c.norm_adv and n_valid > 1:
                mean = (advantages * mask).sum() / n_valid
                std = (((advantages - mean) ** 2 * mask).sum() / (n_valid - 1)).sqrt()
                advantages = (advantages - mean) / (std + 1e-8)
            policy_loss = -(logprob * advantages * mask).sum() / n_valid
            entropy_mean = (entropy * mask).sum() / n_valid
            loss = policy_loss - c.ent_coef * entropy_mean + c.vf_coef * value_loss
            self._zero_grad()
            loss.backward()
            self._optimizer_step(c.max_grad_norm)

            n = self.num_timesteps
            log.scalar("losses/policy_loss", policy_loss.item(), n)
            log.scalar("losses/value_loss", value_loss.item(), n)
            log.scalar("losses/entropy", entropy_mean.item(), n)
            log.progress(n, sps(n), stats)
            if callback is not None and callback(self, n) is False:
                break
