"""A plain MLP's forward and backward passes in numpy, over the memory of its PyTorch
parameters (CPU, float32).

Why: DQN on a classic-control task (CartPole's 2x128 Q-network, minibatches of 128)
spends its time in ~60 small operations per update. A PyTorch CPU call costs ~4 us of
dispatch against numpy's ~1 us, and some of PyTorch's kernels are slow for the thin
shapes of a backward pass (a gradient of 4 inputs: ~40 us against numpy's ~15). So
the products, sums and the loss are numpy's; only the activations, where PyTorch's
vectorized kernels are several times faster than numpy's, run through PyTorch on the
same memory. The update of ``DQN`` on CartPole is 1.2-1.3x faster than the same update
written in PyTorch (``docs/agents.md``). Only the arithmetic moves: the
parameters stay PyTorch tensors (optimizer, checkpoints, other devices unchanged), and
the arrays here are views of their storage, so an in-place optimizer step is seen at once.

``layers`` is :func:`stockgym.agents.networks.mlp_layers`' chain: ``(nn.Linear,
activation)`` pairs, activation ``"relu"``, ``"tanh"`` or ``None``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: ``(weight (out, in), bias (out,), activation)`` views of one linear layer
Arrays = list[tuple[np.ndarray, np.ndarray, str | None]]


def mlp_arrays(layers: list[tuple[nn.Linear, str | None]] | None) -> Arrays | None:
    """numpy views of the chain's weights and biases (shared memory), or ``None`` when
    the chain is missing or not float32 on the CPU (those networks stay in PyTorch)."""
    if not layers:
        return None
    params = [t for lin, _ in layers for t in (lin.weight, lin.bias)]
    if any(t is None or t.device.type != "cpu" or t.dtype != torch.float32 for t in params):
        return None
    return [(lin.weight.detach().numpy(), lin.bias.detach().numpy(), act) for lin, act in layers]


def forward(arrays: Arrays, x: np.ndarray) -> list[np.ndarray]:
    """Outputs of the chain for ``x (B, in)``: ``[x, h1, ..., out]``, each layer's
    activated output ``act(x W^T + b)``, as the PyTorch modules compute it. The
    activation runs through PyTorch on the same memory: its ``relu_`` takes ~4 us at
    256 x 128 where numpy's ``maximum`` takes ~16."""
    hs = [x]
    for w, b, act in arrays:
        x = x @ w.T
        x += b
        if act == "relu":
            torch.from_numpy(x).relu_()
        elif act == "tanh":
            torch.from_numpy(x).tanh_()
        hs.append(x)
    return hs


def backward(arrays: Arrays, hs: list[np.ndarray], grad_out: np.ndarray,
             out: list[np.ndarray]) -> None:
    """Write the gradients ``[dW1, db1, dW2, db2, ...]`` of a loss with ``d loss / d out =
    grad_out`` into ``out`` (arrays shaped like the parameters). ``grad_out`` covers the
    first ``len(grad_out)`` rows of ``hs`` (:func:`forward`'s outputs); later rows took
    part in the forward pass only. The chain rule written out: ``dz = dh * act'(z)``
    (relu: ``h > 0``; tanh: ``1 - h^2``, both from the activated output ``h``, as
    PyTorch's own backward does), ``dW = dz^T h_in``, ``db = sum_rows dz``,
    ``dh_in = dz W``."""
    rows = grad_out.shape[0]
    g = grad_out
    for i in range(len(arrays) - 1, -1, -1):
        w, _, act = arrays[i]
        h = hs[i + 1][:rows]
        if act == "relu":
            g = g * (h > 0)
        elif act == "tanh":  # g * (1 - h^2), PyTorch's kernel: one pass, no temporaries
            g = torch.ops.aten.tanh_backward(torch.from_numpy(g), torch.from_numpy(h)).numpy()
        np.matmul(g.T, hs[i][:rows], out=out[2 * i])
        np.sum(g, axis=0, out=out[2 * i + 1])
        if i > 0:
            g = g @ w
