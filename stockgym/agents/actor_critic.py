"""What PPO and A2C share: an actor and a critic (one encoder with two heads on stockgym
envs by default, see :func:`~stockgym.agents.networks.build_actor_critic`), acting and
valuing. Each algorithm's rollout and update stay in its own file."""

from __future__ import annotations

import torch
from torch import nn

from stockgym.agents.base import Agent
from stockgym.agents.networks import ActionDist, autocast, build_actor_critic, policy_and_value


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
