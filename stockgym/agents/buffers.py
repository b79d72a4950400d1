"""Experience storage on the agent's device: a fixed-size rollout (PPO) and a circular
replay buffer (DQN). Both are plain preallocated tensors; nothing leaves the device."""

from __future__ import annotations

import torch


class RolloutBuffer:
    """``num_steps`` x ``num_envs`` transitions of an on-policy rollout.

    ``obs[t]`` is the observation action ``actions[t]`` was taken in; ``rewards[t]``,
    ``terminated[t]``, ``truncated[t]`` what the env returned; ``final_obs[t]`` the
    observation that ended an episode at step t (rows where ``done``), so truncated
    episodes can be bootstrapped; ``logprobs[t]``, ``values[t]`` the policy's log-prob
    of the action and the critic's value of ``obs[t]`` at collection time.
    """

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_dim: int,
        action_shape: tuple,
        action_dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        T, N = num_steps, num_envs
        z = {"device": device}
        self.obs = torch.zeros(T, N, obs_dim, **z)
        self.final_obs = torch.zeros(T, N, obs_dim, **z)
        self.actions = torch.zeros(T, N, *action_shape, dtype=action_dtype, **z)
        self.logprobs = torch.zeros(T, N, **z)
        self.rewards = torch.zeros(T, N, **z)
        self.values = torch.zeros(T, N, **z)
        self.terminated = torch.zeros(T, N, dtype=torch.bool, **z)
        self.truncated = torch.zeros(T, N, dtype=torch.bool, **z)
        self.num_steps, self.num_envs = T, N

    @property
    def dones(self) -> torch.Tensor:
        return self.terminated | self.truncated


class ReplayBuffer:
    """Circular buffer of ``capacity`` transitions ``(obs, action, reward, next_obs,
    terminated)``. ``next_obs`` is the true next observation (the final observation where
    an episode ended); ``terminated`` (not truncation) stops the bootstrap."""

    def __init__(self, capacity: int, obs_dim: int, device: torch.device) -> None:
        z = {"device": device}
        self.obs = torch.zeros(capacity, obs_dim, **z)
        self.next_obs = torch.zeros(capacity, obs_dim, **z)
        self.actions = torch.zeros(capacity, dtype=torch.int64, **z)
        self.rewards = torch.zeros(capacity, **z)
        self.terminated = torch.zeros(capacity, **z)
        self.capacity = capacity
        self.pos = 0  # next row to write
        self.size = 0

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
    ) -> None:
        """Add a batch of ``n`` transitions (one per env), overwriting the oldest."""
        n = obs.shape[0]
        if self.pos + n <= self.capacity:  # no wrap: plain slices, cheaper than an index
            idx: slice | torch.Tensor = slice(self.pos, self.pos + n)
        else:
            idx = (self.pos + torch.arange(n, device=obs.device)) % self.capacity
        self.obs[idx] = obs
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.next_obs[idx] = next_obs
        self.terminated[idx] = terminated.float()
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    #: the tensors :meth:`state_dict` saves (each ``capacity`` rows long when full)
    FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated")

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """The filled rows as CPU tensors plus ``pos``, ``size`` and ``capacity`` (plain
        tensors and ints only, so ``torch.load(weights_only=True)`` reads it back)."""
        state: dict[str, torch.Tensor | int] = {
            name: getattr(self, name)[: self.size].detach().cpu().clone() for name in self.FIELDS
        }
        state.update(pos=int(self.pos), size=int(self.size), capacity=int(self.capacity))
        return state

    @classmethod
    def from_state_dict(
        cls, state: dict, device: torch.device, capacity: int | None = None
    ) -> ReplayBuffer:
        """A buffer on ``device`` holding what :meth:`state_dict` saved. ``capacity``
        (e.g. the loading config's ``buffer_size``) must equal the saved one: rows and
        write position only mean the same thing in a buffer of the same size."""
        missing = [k for k in (*cls.FIELDS, "pos", "size", "capacity") if k not in state]
        if missing:
            raise ValueError(f"saved replay buffer lacks {missing}")
        saved_cap, size, pos = int(state["capacity"]), int(state["size"]), int(state["pos"])
        if capacity is not None and capacity != saved_cap:
            raise ValueError(
                f"saved replay buffer holds {saved_cap} transitions, the config's "
                f"buffer_size is {capacity}; load with buffer_size={saved_cap}"
            )
        obs = state["obs"]
        if (
            not 0 <= size <= saved_cap
            or not 0 <= pos < saved_cap
            or obs.dim() != 2
            or any(state[k].shape[0] != size for k in cls.FIELDS)
        ):
            raise ValueError(
                f"saved replay buffer is inconsistent: capacity {saved_cap}, "
                f"size {size}, pos {pos}, obs rows {obs.shape[0]}"
            )
        rb = cls(saved_cap, obs.shape[1], device)
        for name in cls.FIELDS:
            getattr(rb, name)[:size] = state[name].to(device)
        rb.pos, rb.size = pos, size
        return rb

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``batch_size`` transitions drawn uniformly with replacement."""
        idx = torch.randint(
            0, self.size, (batch_size,), generator=generator, device=self.obs.device
        )
        return (
            self.obs[idx],
            self.actions[idx],
            self.rewards[idx],
            self.next_obs[idx],
            self.terminated[idx],
        )
