"""Forecasting modules that double as feature backbones: :class:`MLP`, :class:`CNN`,
:class:`LSTM`, :class:`GRU`, :class:`TCN` (causal dilated convolutions) and
:class:`Transformer` (self-attention over the window, optionally over patches).

One small interface, shared by all of them so agents can use any of them as the body of a
policy, value or Q network:

* input ``x`` of shape ``(batch, window, n_features)`` (oldest row first), float32;
* ``encode(x) -> (batch, embed_dim)``: the learned representation;
* ``embed_dim`` (property): the size of that representation;
* ``head``: the forecasting head on top, ``forward(x) = head(encode(x))`` of shape
  ``(batch, out_dim)``. The head's last layer starts at zero, so an untrained model
  forecasts exactly 0 (a zero log return, or a logit of 0 = probability 0.5): training
  starts from the naive forecast and early stopping keeps it unless validation improves.

Constructor arguments are plain numbers (``n_features``, ``window``, ``hidden_size``,
``num_layers``, ``dropout``, ``out_dim``; ``CNN`` and ``TCN`` add ``kernel_size``,
``Transformer`` adds ``n_heads`` and ``patch_len`` / ``stride``), and
``module.kwargs`` returns them, so a module can be rebuilt from JSON.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _dropout(value: Any) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {value!r}")
    return float(value)


class ForecastNet(nn.Module):
    """Base class: shape checks, ``forward = head(encode(x))``, ``kwargs`` for rebuilding."""

    def __init__(self, n_features: int, window: int, out_dim: int = 1) -> None:
        super().__init__()
        self.n_features = _positive_int("n_features", n_features)
        self.window = _positive_int("window", window)
        self.out_dim = _positive_int("out_dim", out_dim)
        self._kwargs: dict[str, Any] = {}

    @property
    def embed_dim(self) -> int:
        """Size of ``encode(x)``'s second dimension: ``hidden_size``, which every model
        here sets."""
        return self.hidden_size

    @property
    def kwargs(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able): ``type(m)(**m.kwargs)`` rebuilds the module."""
        return dict(self._kwargs)

    def _zero_last_layer(self) -> None:
        last = [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.window or x.shape[2] != self.n_features:
            raise ValueError(
                f"{type(self).__name__} expects input (batch, window={self.window}, "
                f"n_features={self.n_features}), got {tuple(x.shape)}"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, window, n_features) -> (batch, embed_dim)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, window, n_features) -> (batch, out_dim)``: ``head(encode(x))``."""
        return self.head(self.encode(x))


class MLP(ForecastNet):
    """Flatten the window, then ``num_layers`` x (Linear -> ReLU -> Dropout) of width
    ``hidden_size``; head: one Linear. ``embed_dim = hidden_size``."""

    def __init__(
        self,
        n_features: int,
        window: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
        out_dim: int = 1,
    ) -> None:
        super().__init__(n_features, window, out_dim)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        _positive_int("num_layers", num_layers)
        p = _dropout(dropout)
        layers: list[nn.Module] = []
        width = window * n_features
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU()]
            if p > 0:
                layers.append(nn.Dropout(p))
            width = hidden_size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden_size, out_dim)
        self._zero_last_layer()
        self._kwargs = dict(
            n_features=n_features,
            window=window,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=p,
            out_dim=out_dim,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.body(x.flatten(1))


class CNN(ForecastNet):
    """1-D temporal convolutions over the window (features are channels).

    ``num_layers`` x (Conv1d(kernel_size, no padding) -> ReLU) with ``hidden_size``
    channels, then flatten -> Linear -> ReLU (-> Dropout) to ``hidden_size``; head: one
    Linear. The flattened size is computed from a dry run, never hard-coded; a window
    too short for the kernels raises ``ValueError``. ``embed_dim = hidden_size``.
    """

    def __init__(
        self,
        n_features: int,
        window: int,
        hidden_size: int = 32,
        num_layers: int = 2,
        kernel_size: int = 3,
        dropout: float = 0.0,
        out_dim: int = 1,
    ) -> None:
        super().__init__(n_features, window, out_dim)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        _positive_int("num_layers", num_layers)
        _positive_int("kernel_size", kernel_size)
        p = _dropout(dropout)
        shortest = num_layers * (kernel_size - 1) + 1
        if window < shortest:
            raise ValueError(
                f"CNN: window={window} is too short for {num_layers} convolutions of "
                f"kernel_size={kernel_size} (needs window >= {shortest})"
            )
        convs: list[nn.Module] = []
        channels = n_features
        for _ in range(num_layers):
            convs += [nn.Conv1d(channels, hidden_size, kernel_size), nn.ReLU()]
            channels = hidden_size
        self.convs = nn.Sequential(*convs)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, n_features, window)).numel()
        proj: list[nn.Module] = [nn.Flatten(), nn.Linear(flat, hidden_size), nn.ReLU()]
        if p > 0:
            proj.append(nn.Dropout(p))
        self.proj = nn.Sequential(*proj)
        self.flat_size = flat
        self.head = nn.Linear(hidden_size, out_dim)
        self._zero_last_layer()
        self._kwargs = dict(
            n_features=n_features,
            window=window,
            hidden_size=hidden_size,
            num_layers=num_layers,
            kernel_size=kernel_size,
            dropout=p,
            out_dim=out_dim,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.proj(self.convs(x.transpose(1, 2)))


class _Recurrent(ForecastNet):
    """Stacked recurrent layers (dropout between them), encoding = the last step's top
    hidden state; head Linear(hidden, hidden // 2) -> ReLU -> Linear(hidden // 2, out_dim).
    ``embed_dim = hidden_size``. Subclasses name the torch layer (``cell``) and the
    attribute holding it (``attr``: it names the weights in checkpoints)."""

    cell: type[nn.Module]
    attr: str

    def __init__(
        self,
        n_features: int,
        window: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.2,
        out_dim: int = 1,
    ) -> None:
        super().__init__(n_features, window, out_dim)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        _positive_int("num_layers", num_layers)
        p = _dropout(dropout)
        rnn = self.cell(
            n_features,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=p if num_layers > 1 else 0.0,
        )
        setattr(self, self.attr, rnn)
        mid = max(1, hidden_size // 2)
        self.head = nn.Sequential(nn.Linear(hidden_size, mid), nn.ReLU(), nn.Linear(mid, out_dim))
        self._zero_last_layer()
        self._kwargs = dict(
            n_features=n_features,
            window=window,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=p,
            out_dim=out_dim,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        out, _ = getattr(self, self.attr)(x)
        return out[:, -1, :]


class LSTM(_Recurrent):
    """Stacked LSTM (see :class:`_Recurrent`; the head as in the notebook this replaces)."""

    cell, attr = nn.LSTM, "lstm"


class GRU(_Recurrent):
    """Stacked GRU (see :class:`_Recurrent`): the LSTM's gated recurrence with two gates
    instead of three (update ``z``, reset ``r``): ``h_t = (1 - z_t) * n_t + z_t * h_{t-1}``
    with the candidate ``n_t = tanh(W_n x_t + r_t * (U_n h_{t-1}))``."""

    cell, attr = nn.GRU, "gru"


class _CausalBlock(nn.Module):
    """Residual block of two causal dilated convolutions (Bai, Kolter & Koltun 2018):
    ``y = relu(x' + conv2(drop(relu(conv1(x)))))`` with ``x'`` = ``x`` or a 1x1
    convolution of it when the channel count changes. Each convolution pads
    ``(kernel_size - 1) * dilation`` zeros on the left only, so output t reads inputs
    ``t, t - d, ..., t - (k - 1) d`` and never a later one."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, p: float) -> None:
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.conv1 = nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel_size, dilation=dilation)
        self.drop = nn.Dropout(p) if p > 0 else nn.Identity()
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, C_out, T)
        h = torch.relu(self.conv1(nn.functional.pad(x, (self.pad, 0))))
        h = self.conv2(nn.functional.pad(self.drop(h), (self.pad, 0)))
        return torch.relu(self.skip(x) + h)


class TCN(ForecastNet):
    """Temporal convolutional network: ``num_layers`` residual blocks of causal dilated
    convolutions (:class:`_CausalBlock`), dilation ``2**i`` in block ``i``, ``hidden_size``
    channels; encoding = the output at the last (most recent) step.

    Receptive field (``receptive_field``): the output at step t depends on the inputs
    ``t - R + 1 .. t`` only, ``R = 1 + 2 (kernel_size - 1) (2**num_layers - 1)`` (two
    convolutions per block, each reaching ``(kernel_size - 1) * 2**i`` steps back); e.g.
    kernel 3 and 2 blocks: ``R = 13``. A window shorter than ``R`` is zero-padded on the
    left (allowed); rows older than ``R - 1`` steps cannot reach the encoding (wasted).
    :meth:`sequence` returns every step's causal output. Head: one Linear.
    ``embed_dim = hidden_size``.
    """

    def __init__(
        self,
        n_features: int,
        window: int,
        hidden_size: int = 32,
        num_layers: int = 2,
        kernel_size: int = 3,
        dropout: float = 0.0,
        out_dim: int = 1,
    ) -> None:
        super().__init__(n_features, window, out_dim)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        _positive_int("num_layers", num_layers)
        _positive_int("kernel_size", kernel_size)
        p = _dropout(dropout)
        blocks, channels = [], n_features
        for i in range(num_layers):
            blocks.append(_CausalBlock(channels, hidden_size, kernel_size, 2**i, p))
            channels = hidden_size
        self.blocks = nn.Sequential(*blocks)
        self.receptive_field = 1 + 2 * (kernel_size - 1) * (2**num_layers - 1)
        self.head = nn.Linear(hidden_size, out_dim)
        self._zero_last_layer()
        self._kwargs = dict(
            n_features=n_features,
            window=window,
            hidden_size=hidden_size,
            num_layers=num_layers,
            kernel_size=kernel_size,
            dropout=p,
            out_dim=out_dim,
        )

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Causal outputs of every step: ``(batch, window, n_features) -> (batch, window,
        hidden_size)``; row t depends on ``x[:, t - receptive_field + 1 : t + 1]`` only."""
        self._check(x)
        return self.blocks(x.transpose(1, 2)).transpose(1, 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequence(x)[:, -1, :]


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """Fixed positional encoding (Vaswani et al. 2017), ``(length, dim)``:
    ``PE[p, 2i] = sin(p / 10000^(2i/dim))``, ``PE[p, 2i+1] = cos(p / 10000^(2i/dim))``."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class Transformer(ForecastNet):
    """Transformer encoder over the window; encoding = the most recent token's output.

    Tokens: each row of the window (``patch_len = 1``), or - in the spirit of PatchTST
    (Nie et al. 2023) - patches of ``patch_len`` consecutive rows taken every ``stride``
    rows (default ``stride = patch_len``, no overlap), flattened (``patch_len x
    n_features`` values) and projected linearly to ``hidden_size``. Patches are aligned
    to end at the most recent row; when ``(window - patch_len)`` is not a multiple of
    ``stride`` the oldest row is repeated on the left to fill the first patch. Unlike
    PatchTST the features of a row share a token (no channel independence).

    ``z_0 = proj(tokens) + PE`` (fixed sinusoidal positions, :func:`sinusoidal_positions`),
    then ``num_layers`` pre-norm encoder layers (``n_heads`` heads of self-attention,
    feed-forward width ``2 * hidden_size``, GELU, ``dropout``), a final LayerNorm, and
    the last token's vector is the encoding (``embed_dim = hidden_size``; it must be a
    multiple of ``n_heads``). Attention is not masked: every token is in the past of the
    decision date. Head: one Linear.
    """

    def __init__(
        self,
        n_features: int,
        window: int,
        hidden_size: int = 32,
        num_layers: int = 2,
        n_heads: int = 4,
        patch_len: int = 1,
        stride: int | None = None,
        dropout: float = 0.0,
        out_dim: int = 1,
    ) -> None:
        super().__init__(n_features, window, out_dim)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        _positive_int("num_layers", num_layers)
        _positive_int("n_heads", n_heads)
        _positive_int("patch_len", patch_len)
        stride = patch_len if stride is None else _positive_int("stride", stride)
        p = _dropout(dropout)
        if hidden_size % n_heads:
            raise ValueError(
                f"Transformer: hidden_size={hidden_size} must be a multiple of n_heads={n_heads}"
            )
        if patch_len > window:
            raise ValueError(f"Transformer: patch_len={patch_len} is longer than window={window}")
        self.patch_len, self.stride = patch_len, stride
        self.left_pad = (-(window - patch_len)) % stride
        self.n_tokens = (window + self.left_pad - patch_len) // stride + 1
        self.proj = nn.Linear(patch_len * n_features, hidden_size)
        self.register_buffer(
            "positions", sinusoidal_positions(self.n_tokens, hidden_size), persistent=False
        )
        layer = nn.TransformerEncoderLayer(
            hidden_size,
            n_heads,
            dim_feedforward=2 * hidden_size,
            dropout=p,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, out_dim)
        self._zero_last_layer()
        self._kwargs = dict(
            n_features=n_features,
            window=window,
            hidden_size=hidden_size,
            num_layers=num_layers,
            n_heads=n_heads,
            patch_len=patch_len,
            stride=stride,
            dropout=p,
            out_dim=out_dim,
        )

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, window, n_features) -> (batch, n_tokens, patch_len * n_features)``."""
        self._check(x)
        if self.patch_len == 1 and self.stride == 1:
            return x
        if self.left_pad:
            x = torch.cat([x[:, :1].expand(-1, self.left_pad, -1), x], dim=1)
        # unfold: (B, n_tokens, F, patch_len) -> rows of a patch oldest first
        patches = x.unfold(1, self.patch_len, self.stride).transpose(2, 3)
        return patches.reshape(x.shape[0], self.n_tokens, -1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.proj(self.tokens(x)) + self.positions
        return self.norm(self.encoder(z))[:, -1, :]


#: Model names accepted by :func:`build_model` (and ``--model`` on the command line).
MODELS: dict[str, type[ForecastNet]] = {
    "mlp": MLP,
    "cnn": CNN,
    "lstm": LSTM,
    "gru": GRU,
    "tcn": TCN,
    "transformer": Transformer,
}


def build_model(name: str, n_features: int, window: int, **kwargs: Any) -> ForecastNet:
    """``MODELS[name](n_features, window, **kwargs)``; unknown names raise ``ValueError``.

    Keyword arguments a model does not take (``kernel_size`` for MLP / LSTM / GRU /
    Transformer, ``n_heads`` for all but Transformer) are ignored,
    so one set of hyperparameters serves every model.
    """
    cls = MODELS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return cls(n_features, window, **{k: v for k, v in kwargs.items() if k in accepted})
