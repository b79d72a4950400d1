"""What DQN and tabular Q-learning share: ``Discrete`` actions, epsilon-greedy acting over a
subclass's greedy action (``_greedy(obs)``) on the linear epsilon schedule, and the
collect step of their loops."""

from __future__ import annotations

import torch
from gymnasium import spaces

from stockgym.agents.base import Agent
from stockgym.agents.vecenv import Step


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
    title: str  # the algorithm's name in messages

    def _check_action_space(self, space: spaces.Space) -> None:
        if not isinstance(space, spaces.Discrete):
            raise ValueError(
                f"{self.title} needs a Discrete action space, the env has {space}; "
                "use PPO, A2C or REINFORCE for MultiDiscrete and Box actions"
            )

    def _collect(
        self, obs: torch.Tensor, explore_steps: int, start: int
    ) -> tuple[torch.Tensor, Step, torch.Tensor]:
        """One epsilon-greedy step of every env, epsilon from the schedule at this learn
        call's step ``num_timesteps - start``: ``(actions, step, next_obs)``, ``next_obs``
        the observation each transition ended on (the final one where an episode ended,
        not the next episode's first)."""
        c = self.config
        self.epsilon = linear_schedule(
            c.start_e, c.end_e, explore_steps, self.num_timesteps - start
        )
        with torch.inference_mode():  # acting: no autograd bookkeeping at all
            actions = self._explore(obs, self.epsilon)
            step = self.env.step(actions + int(self.action_space.start))
        if step.final_obs is None:
            return actions, step, step.obs
        return actions, step, torch.where(step.done.unsqueeze(1), step.final_obs, step.obs)

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
