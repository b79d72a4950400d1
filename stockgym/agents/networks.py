"""Networks: a backbone that reads the observation, heads for actions and values, and
the action distributions (sampling from the agent's own generator).

Backbone (:class:`Encoder`): with a stockgym env (an ``obs_layout``), the feature part of
the flat observation is reshaped to ``(window, assets x features)`` and encoded by a
:mod:`stockgym.forecasters` module (``MLP | CNN | LSTM`` via ``encode``); the
portfolio part (each asset's weight and the cash fraction) is appended to the encoding.
Without a layout (e.g. CartPole) the flat observation is one row of ``D`` features and
only ``mlp`` applies. ``pretrained`` loads a trained forecaster's module into the
backbone (a transfer from the supervised model to the policy). ``activation``
(``relu | tanh``, ``mlp`` backbone only; default ``relu``, the forecasters' MLP as it
is): ``tanh`` swaps each hidden ReLU for a Tanh and re-initialises the hidden layers
orthogonally with gain sqrt(2), zero bias - the MLP of SB3's and CleanRL's PPO.

Actor and critic (:func:`build_actor_critic`, PPO and REINFORCE): a :class:`Policy`
(backbone + policy head) and either a value head on the policy's backbone (shared:
``params = head_pi(enc(s))``, ``V = head_v(enc(s))``, one encoder pass for both,
:func:`policy_and_value`) or a :class:`Net` with its own backbone.

Action distributions (:class:`ActionDist`):

* ``Discrete(n)``: categorical over logits; ``MultiDiscrete(nvec)``: independent
  categoricals (log-probs and entropies summed).
* ``Box``: diagonal Gaussian with a learned, state-independent log std. How a sample
  ``u`` reaches the env (``squash``): ``"clip"`` (default, as CleanRL and SB3) sends
  ``clip(u, low, high)`` and learns with the log-prob of the unclipped ``u``;
  ``"tanh"`` sends ``low + (tanh(u) + 1) / 2 * (high - low)`` (bounded Box only). The
  ratio of two policies' densities is the same in ``u`` and in the squashed action
  (the Jacobian cancels), so PPO and REINFORCE learn on ``u`` exactly; the entropy
  bonus is the Gaussian's entropy in ``u``. Deterministic actions are the squashed mean.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from stockgym.agents.config import ACTIVATIONS
from stockgym.core import check_number
from stockgym.forecasters.models import MLP, MODELS, ForecastNet, build_model

SQUASH = ("clip", "tanh")


def layer_init(layer: nn.Linear, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights, constant bias (the initialisation CleanRL's PPO uses)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


class Encoder(nn.Module):
    """``obs (B, D) -> (B, out_dim)`` (see the module docstring).

    ``spec`` (JSON-able, stored in checkpoints) says how to rebuild it:
    ``backbone``, ``obs_dim``, ``layout`` (or ``None``), ``module_kwargs`` (the
    forecasters module's constructor arguments), optionally ``activation`` (``mlp``
    only; absent, as in checkpoints written before it existed, means ``relu``).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        layout = spec["layout"]
        self.body: ForecastNet = MODELS[spec["backbone"]](**spec["module_kwargs"])
        activation = spec.get("activation", "relu")
        if activation != "relu":
            _set_activation(self.body, activation)
        if layout is None:
            self.window, self.row = 1, spec["obs_dim"]
            self.n_feat_obs = spec["obs_dim"]
        else:
            self.window = layout["window"]
            self.row = layout["n_assets"] * layout["n_features"]
            self.n_feat_obs = self.window * self.row
        self.out_dim = self.body.embed_dim + spec["obs_dim"] - self.n_feat_obs

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        b = obs.shape[0]
        feats = obs[:, : self.n_feat_obs].reshape(b, self.window, self.row)
        z = self.body.encode(feats)
        if self.n_feat_obs == obs.shape[1]:
            return z
        return torch.cat([z, obs[:, self.n_feat_obs :]], dim=1)


def _set_activation(body: nn.Module, activation: str) -> None:
    """Make an :class:`~stockgym.forecasters.models.MLP`'s hidden activations
    ``activation`` in place (``tanh``: also orthogonal hidden weights, gain sqrt(2), zero
    bias). Parameter names stay the same, so state dicts are interchangeable."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if not isinstance(body, MLP):
        raise ValueError(
            f"activation={activation!r} applies to the mlp backbone only, got {type(body).__name__}"
        )
    layers = []
    for m in body.body:
        if isinstance(m, nn.ReLU):
            m = nn.Tanh() if activation == "tanh" else m
        elif isinstance(m, nn.Linear) and activation == "tanh":
            layer_init(m)
        layers.append(m)
    body.body = nn.Sequential(*layers)


def encoder_spec(
    obs_dim: int,
    layout: dict[str, Any] | None,
    backbone: str,
    hidden_size: int,
    num_layers: int,
    kernel_size: int,
    activation: str = "relu",
) -> dict[str, Any]:
    """The spec of a new backbone for this observation (``ValueError`` if it cannot read
    it, or if ``activation`` is not ``relu`` for a backbone other than ``mlp``)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if activation != "relu" and backbone != "mlp":
        raise ValueError(
            f"activation={activation!r} applies to the mlp backbone only, got backbone={backbone!r}"
        )
    if layout is None:
        if backbone != "mlp":
            raise ValueError(
                f"backbone {backbone!r} needs a stockgym env (an obs_layout giving the window); "
                "this env's observation is a flat vector: use backbone='mlp'"
            )
        n_features, window = obs_dim, 1
    else:
        n_features, window = layout["n_assets"] * layout["n_features"], layout["window"]
        expected = window * n_features + layout["n_assets"] + 1
        if expected != obs_dim:
            raise ValueError(
                f"obs_layout {layout} describes {expected} values, observation has {obs_dim}"
            )
    module = build_model(
        backbone,
        n_features,
        window,
        hidden_size=hidden_size,
        num_layers=num_layers,
        kernel_size=kernel_size,
        dropout=0.0,
    )
    spec = {
        "backbone": backbone,
        "obs_dim": obs_dim,
        "layout": layout,
        "module_kwargs": module.kwargs,
    }
    if activation != "relu":  # specs without the key read as relu (older checkpoints too)
        spec["activation"] = activation
    return spec


def pretrained_spec(
    path: str | Path, obs_dim: int, layout: dict[str, Any] | None
) -> tuple[dict, Any]:
    """``(spec, forecaster)`` for a backbone initialised from a forecaster checkpoint.

    The forecaster must read what the env observes: same window, and its input features
    equal to the env's features (one asset). Raises ``ValueError`` naming both sides."""
    from stockgym.forecasters.forecaster import Forecaster

    fc = Forecaster.load(path, device="cpu")
    if layout is None:
        raise ValueError(f"pretrained forecaster {path} needs a stockgym env (obs_layout)")
    from stockgym.data import DataError, feature_names

    model = fc.model
    want = (layout["window"], layout["n_assets"] * layout["n_features"])
    have = (model.window, model.n_features)
    try:
        fc_names = feature_names(fc.features)
    except DataError:  # raw price fields (open, close...) are not env features
        fc_names = list(fc.features)
    if want != have or layout["n_assets"] != 1 or list(layout["feature_names"]) != fc_names:
        raise ValueError(
            f"pretrained forecaster {path} reads window={have[0]} x {have[1]} features "
            f"{fc.features}, but the env observes window={want[0]} x {want[1]} features "
            f"{layout['feature_names']} for {layout['n_assets']} asset(s); build the env with "
            "the forecaster's window, features and scaler"
        )
    spec = {
        "backbone": fc.model_name,
        "obs_dim": obs_dim,
        "layout": layout,
        "module_kwargs": model.kwargs,
    }
    return spec, fc


def make_head(
    spec: dict[str, Any], width: int, out_dim: int, hidden: int, gain: float
) -> nn.Sequential:
    """The head on an encoding of ``width`` values: with a stockgym layout one hidden Tanh
    layer of ``hidden`` units (it mixes the market encoding with the portfolio state),
    then a linear output; without one (the encoder being an MLP over the whole
    observation) the linear output only. Orthogonal init; the output layer's gain is
    ``gain`` (0.01 for policies, 1 for values, as CleanRL)."""
    layers: list[nn.Module] = []
    if spec["layout"] is not None:
        layers += [layer_init(nn.Linear(width, hidden)), nn.Tanh()]
        width = hidden
    return nn.Sequential(*layers, layer_init(nn.Linear(width, out_dim), gain=gain))


class Net(nn.Module):
    """``Encoder`` + a head (:func:`make_head`): ``obs -> (B, out_dim)`` (a value,
    Q-values or the parameters of an action distribution)."""

    def __init__(self, spec: dict[str, Any], out_dim: int, hidden: int, gain: float) -> None:
        super().__init__()
        self.encoder = Encoder(spec)
        self.head = make_head(spec, self.encoder.out_dim, out_dim, hidden, gain)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs))


def load_forecaster_weights(net: Net, forecaster: Any) -> None:
    """Copy a trained forecaster's module weights into ``net``'s backbone."""
    net.encoder.body.load_state_dict(forecaster.model.state_dict())


# ------------------------------------------------------------------ distributions
class ActionDist:
    """Sampling, log-probs, entropy and env actions for one action space.

    ``n_params``: how many numbers per observation a policy network outputs.
    ``raw`` actions (what buffers store and log-probs are of): class indices (int64,
    ``(B,)`` for Discrete, ``(B, A)`` for MultiDiscrete) or Gaussian samples ``u``
    (float32, ``(B, A)``). :meth:`to_env` maps raw actions to the env's actions.
    """

    def __init__(
        self,
        space: spaces.Space,
        device: torch.device,
        squash: str = "clip",
        log_std_init: float = 0.0,
    ) -> None:
        if squash not in SQUASH:
            raise ValueError(f"squash must be one of {SQUASH}, got {squash!r}")
        self.space = space
        self.squash = squash
        self.log_std_init = log_std_init
        if isinstance(space, spaces.Discrete):
            self.kind, self.nvec = "discrete", [int(space.n)]
            self.start = int(space.start)
            self.n_params = int(space.n)
        elif isinstance(space, spaces.MultiDiscrete):
            if np.asarray(space.nvec).ndim != 1:
                raise ValueError(f"MultiDiscrete must be 1-D, got nvec shape {space.nvec.shape}")
            self.kind, self.nvec = "multidiscrete", [int(x) for x in space.nvec]
            self.n_params = sum(self.nvec)
        elif isinstance(space, spaces.Box):
            if len(space.shape) != 1:
                raise ValueError(f"Box actions must be 1-D, got shape {space.shape}")
            self.kind = "box"
            self.dim = int(space.shape[0])
            self.n_params = self.dim
            low = np.asarray(space.low, dtype=np.float32)
            high = np.asarray(space.high, dtype=np.float32)
            if squash == "tanh" and not (np.isfinite(low).all() and np.isfinite(high).all()):
                raise ValueError(f"squash='tanh' needs a bounded Box, got {space}")
            self.low = torch.as_tensor(low, device=device)
            self.high = torch.as_tensor(high, device=device)
        else:
            raise ValueError(f"unsupported action space {space}")

    # -- categorical helpers
    def _split(self, logits: torch.Tensor) -> list[torch.Tensor]:
        if self.kind == "discrete":
            return [logits]
        return list(torch.split(logits, self.nvec, dim=-1))

    def sample(
        self, params: torch.Tensor, log_std: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """A raw action per row, drawn with ``generator``."""
        if self.kind == "box":
            noise = torch.randn(params.shape, generator=generator, device=params.device)
            return params + log_std.exp() * noise
        out = []
        for lg in self._split(params):
            # Gumbel-max: argmax(logits + Gumbel noise) is a categorical sample
            u = torch.rand(lg.shape, generator=generator, device=lg.device)
            out.append(torch.argmax(lg - torch.log(-torch.log(u.clamp_min(1e-20))), dim=-1))
        return out[0] if self.kind == "discrete" else torch.stack(out, dim=-1)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """The most likely raw action (the mean for a Gaussian)."""
        if self.kind == "box":
            return params
        out = [torch.argmax(lg, dim=-1) for lg in self._split(params)]
        return out[0] if self.kind == "discrete" else torch.stack(out, dim=-1)

    def log_prob(
        self, params: torch.Tensor, log_std: torch.Tensor | None, raw: torch.Tensor
    ) -> torch.Tensor:
        """``log pi(raw | obs)`` per row, ``(B,)``."""
        if self.kind == "box":
            z = (raw - params) / log_std.exp()
            return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        cols = raw.unsqueeze(-1) if self.kind == "discrete" else raw
        return _total(
            [
                torch.log_softmax(lg, dim=-1).gather(-1, cols[..., j : j + 1].long()).squeeze(-1)
                for j, lg in enumerate(self._split(params))
            ]
        )

    def entropy(self, params: torch.Tensor, log_std: torch.Tensor | None) -> torch.Tensor:
        """Entropy per row, ``(B,)`` (Gaussian: of ``u``, before squashing)."""
        if self.kind == "box":
            ent = 0.5 + 0.5 * math.log(2 * math.pi) + log_std
            return ent.sum(-1).expand(params.shape[0])
        logps = [torch.log_softmax(lg, dim=-1) for lg in self._split(params)]
        return -_total([(logp.exp() * logp).sum(-1) for logp in logps])

    def log_prob_entropy(
        self, params: torch.Tensor, log_std: torch.Tensor | None, raw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob, entropy)`` as the two methods give them, with one log-softmax
        per categorical."""
        if self.kind == "box":
            return self.log_prob(params, log_std, raw), self.entropy(params, log_std)
        cols = raw.unsqueeze(-1) if self.kind == "discrete" else raw
        logps = [torch.log_softmax(lg, dim=-1) for lg in self._split(params)]
        logprob = _total(
            [
                logp.gather(-1, cols[..., j : j + 1].long()).squeeze(-1)
                for j, logp in enumerate(logps)
            ]
        )
        return logprob, -_total([(logp.exp() * logp).sum(-1) for logp in logps])

    def to_env(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw actions -> the env's actions (clip or tanh into a Box; offset Discrete)."""
        if self.kind == "box":
            if self.squash == "tanh":
                return self.low + (torch.tanh(raw) + 1.0) * 0.5 * (self.high - self.low)
            return torch.maximum(torch.minimum(raw, self.high), self.low)
        if self.kind == "discrete" and self.start:
            return raw + self.start
        return raw

    def raw_shape(self) -> tuple[int, ...]:
        """Shape of one raw action (``()`` for Discrete)."""
        if self.kind == "discrete":
            return ()
        return (len(self.nvec),) if self.kind == "multidiscrete" else (self.dim,)

    def raw_dtype(self) -> torch.dtype:
        return torch.float32 if self.kind == "box" else torch.int64


def _total(terms: list[torch.Tensor]) -> torch.Tensor:
    """The sum of one categorical's terms per row (one term: itself, no extra op)."""
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


class Policy(nn.Module):
    """A policy network over :class:`ActionDist` (plus a log-std for Box actions):
    ``net`` (a :class:`Net`) maps observations to the distribution's parameters."""

    def __init__(self, spec: dict[str, Any], dist: ActionDist, hidden: int) -> None:
        super().__init__()
        self.dist = dist
        self.net = Net(spec, dist.n_params, hidden, gain=0.01)
        self.log_std = (
            nn.Parameter(torch.full((dist.n_params,), float(dist.log_std_init)))
            if dist.kind == "box"
            else None
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    def act(
        self, obs: torch.Tensor, generator: torch.Generator, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(raw action, log-prob)`` for a batch of observations."""
        return self.sample(self.net(obs), generator, deterministic)

    def sample(
        self, params: torch.Tensor, generator: torch.Generator, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(raw action, log-prob)`` given the distribution's parameters."""
        d = self.dist
        raw = d.mode(params) if deterministic else d.sample(params, self.log_std, generator)
        return raw, d.log_prob(params, self.log_std, raw)

    def evaluate(self, obs: torch.Tensor, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log-prob of raw, entropy)`` under the current parameters (with gradients)."""
        return self.dist.log_prob_entropy(self.net(obs), self.log_std, raw)


def shared_by_default(spec: dict[str, Any]) -> bool:
    """Whether actor and critic share one encoder when ``shared_encoder`` is ``None``:
    yes with a stockgym layout (any backbone: each head keeps a hidden layer of its own,
    the shape of SB3's PPO with a shared features extractor, and the encoder, most of
    the compute, runs once), no for a plain vector observation (CartPole: there the
    encoder is the whole network and the heads are single linear layers)."""
    return spec["layout"] is not None


def build_actor_critic(
    spec: dict[str, Any], dist: ActionDist, hidden: int, shared: bool | None, value: bool = True
) -> dict[str, nn.Module]:
    """``{"actor": Policy, "critic": ...}`` (no critic with ``value=False``).

    ``shared`` (``None``: :func:`shared_by_default`): the critic is a head
    (:func:`make_head`) on the actor's encoder, ``V(s) = head_v(enc(s))`` beside
    ``params(s) = head_pi(enc(s))``, so one encoder pass serves both and both losses
    train it; otherwise the critic is a :class:`Net` with an encoder of its own."""
    shared = shared_by_default(spec) if shared is None else shared
    actor = Policy(spec, dist, hidden)
    nets: dict[str, nn.Module] = {"actor": actor}
    if value:
        nets["critic"] = (
            make_head(spec, actor.net.encoder.out_dim, 1, hidden, gain=1.0)
            if shared
            else Net(spec, 1, hidden, gain=1.0)
        )
    return nets


def policy_and_value(
    actor: Policy, critic: nn.Module, obs: torch.Tensor, precision: str = "float32"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(distribution parameters (B, n_params), value (B,))`` in float32, one encoder
    pass when ``critic`` is a head on the actor's encoder (:func:`build_actor_critic`).
    ``precision="bfloat16"``: the networks run under ``torch.autocast`` in bfloat16
    (matrix products, convolutions and the LSTM; the outputs come back as float32)."""
    with autocast(obs.device, precision):
        if isinstance(critic, Net):
            params, value = actor.net(obs), critic(obs)
        else:
            z = actor.net.encoder(obs)
            params, value = actor.net.head(z), critic(z)
    value = value.squeeze(-1)
    if precision == "float32":
        return params, value
    return params.float(), value.float()


PRECISIONS = ("float32", "bfloat16")


def check_policy_options(config: Any) -> None:
    """Check the policy options of PPO's, A2C's and REINFORCE's configs: ``squash``,
    ``log_std_init``, ``shared_encoder`` and ``precision`` (``ValueError`` naming the
    bad one)."""
    if config.squash not in SQUASH:
        raise ValueError(f"squash must be one of {SQUASH}, got {config.squash!r}")
    check_number("log_std_init", config.log_std_init)
    if config.shared_encoder not in (None, True, False):
        raise ValueError(
            f"shared_encoder must be true, false or None, got {config.shared_encoder!r}"
        )
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {config.precision!r}")


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """``torch.autocast`` to bfloat16 on ``device`` when ``precision == "bfloat16"``; a
    no-op context for ``float32`` (entering a disabled autocast still costs ~10 us, a
    few percent of a small network's rollout step)."""
    if precision == "float32":
        return nullcontext()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)
