"""What DQN and tabular Q-learning share: epsilon-greedy acting over a subclass's greedy
action (``_greedy(obs)``), and the linear epsilon schedule."""

from __future__ import annotations

import torch

from stockgym.agents.base import Agent


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """``start`` moving linearly to ``end`` over ``duration`` steps, then ``end``:
    ``start + (end - start) * min(1, t / duration)``."""
    if duration <= 0:
        return end
    return start + (end - start) * min(1.0, t / duration)


class EpsilonGreedyAgent(Agent):
    """An :class:`Agent` with ``Discrete`` actions that acts by ``_greedy(obs)`` (the
    index of the best action) and explores with probability ``self.epsilon``."""

    epsilon: float

    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _explore(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Epsilon-greedy actions from one draw of ``2 x B`` uniforms ``u`` (the agent's
        generator): where ``u[0] < epsilon`` the action ``floor(u[1] * n)``, a uniform
        one, else the greedy one."""
        n = int(self.action_space.n)
        u = torch.rand(2, obs.shape[0], generator=self.generator, device=self.device)
        random_a = (u[1] * n).long().clamp_(max=n - 1)
        return torch.where(u[0] < epsilon, random_a, self._greedy(obs))

    def _predict(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        a = self._greedy(obs) if deterministic else self._explore(obs, self.epsilon)
        return a + int(self.action_space.start)
