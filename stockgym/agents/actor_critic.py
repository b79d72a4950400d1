"""What PPO and A2C share: an actor and a critic (one encoder with two heads on stockgym
envs by default, see :func:`~stockgym.agents.networks.build_actor_critic`), acting,
valuing, collecting a rollout and bootstrapping its values. Each algorithm's advantage
and update stay in its own file."""

from __future__ import annotations

import torch
from torch import nn

from stockgym.agents.base import Agent
from stockgym.agents.buffers import RolloutBuffer
from stockgym.agents.monitor import EpisodeStats
from stockgym.agents.networks import ActionDist, autocast, build_actor_critic, policy_and_value


def bootstrap_values(
    values: torch.Tensor,
    last_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
) -> torch.Tensor:
    """``next_values`` for :func:`compute_gae` (all ``(T, N)``; ``last_value`` ``(N,)``:
    the value of the observation after the rollout; ``final_values[t]``: ``V(final_obs[t])``
    where ``truncated[t]``)."""
    nxt = torch.cat([values[1:], last_value.unsqueeze(0)])
    nxt = torch.where(truncated, final_values, nxt)
    return torch.where(terminated, torch.zeros_like(nxt), nxt)


def explained_variance(returns: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``1 - Var(returns - values) / Var(returns)``, NaN where the returns do not vary
    (a 0-dim tensor: logged with the update's other scalars in one host copy)."""
    var_y = returns.var()
    return torch.where(var_y > 0, 1.0 - (returns - values).var() / var_y, torch.nan)


class ActorCriticAgent(Agent):
    """An :class:`Agent` whose config has ``squash``, ``log_std_init``, ``hidden_size``,
    ``shared_encoder`` and ``precision``."""

    def _build(self) -> nn.ModuleDict:
        c = self.config
        self.dist = ActionDist(self.action_space, self.device, c.squash, c.log_std_init)
        return nn.ModuleDict(
            build_actor_critic(self.encoder_spec, self.dist, c.hidden_size, c.shared_encoder)
        )

    def _predict(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        with autocast(obs.device, self.config.precision):
            params = self.nets["actor"](obs)
        raw, _ = self.nets["actor"].sample(params.float(), self.generator, deterministic)
        return self.dist.to_env(raw)

    def policy_and_value(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(distribution parameters, V(obs))`` (one encoder pass when shared)."""
        return policy_and_value(self.nets["actor"], self.nets["critic"], obs, self.config.precision)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy_and_value(obs)[1]

    def new_buffer(self) -> RolloutBuffer:
        """An empty rollout buffer: ``config.num_steps`` steps of every env."""
        env = self.env
        raw_shape, dtype = self.dist.raw_shape(), self.dist.raw_dtype()
        n_steps = self.config.num_steps
        return RolloutBuffer(n_steps, env.num_envs, env.obs_dim, raw_shape, dtype, self.device)

    def rollout(self, buf: RolloutBuffer, obs: torch.Tensor, stats: EpisodeStats) -> torch.Tensor:
        """Fill ``buf`` with ``num_steps`` steps of every env under the current policy
        (observations, actions, their log-probs, values, rewards times ``reward_scale``,
        episode ends, final observations), logging the episodes that end; returns the
        observation after the last step."""
        env, actor, scale = self.env, self.nets["actor"], self.config.reward_scale
        with torch.inference_mode():  # acting: no autograd bookkeeping at all
            for t in range(buf.obs.shape[0]):
                buf.obs[t] = obs
                params, buf.values[t] = self.policy_and_value(obs)
                raw, buf.logprobs[t] = actor.sample(params, self.generator)
                buf.actions[t] = raw
                step = env.step(self.dist.to_env(raw))
                torch.mul(step.reward, scale, out=buf.rewards[t])
                buf.terminated[t] = step.terminated
                buf.truncated[t] = step.truncated
                if step.final_obs is not None:
                    buf.final_obs[t] = step.final_obs
                self.num_timesteps += env.num_envs
                stats.update(step, self.num_timesteps)  # device maths only
                obs = step.obs
        self.logger.episodes(stats)  # the episodes that ended: one host read per rollout
        env.check()
        self._last_obs = obs
        return obs

    def next_values(self, buf: RolloutBuffer, obs: torch.Tensor) -> torch.Tensor:
        """The value of what follows each step of ``buf`` (:func:`bootstrap_values`):
        ``V(obs[t+1])`` while the episode goes on, ``V(final_obs[t])`` where it was
        truncated (the future is cut off, not zero), 0 where it terminated."""
        final_values = torch.zeros_like(buf.values)
        trunc = buf.truncated & ~buf.terminated
        if bool(trunc.any()):
            final_values[trunc] = self.value(buf.final_obs[trunc])
        return bootstrap_values(buf.values, self.value(obs), buf.terminated, trunc, final_values)
