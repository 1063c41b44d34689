"""The tutorial's mathematics in NumPy: every AlexNet layer's forward and backward pass, float64, readable first.

Each layer is a pair of functions: ``*_forward(inputs...) -> (output, cache)`` and ``*_backward(d_output, cache) ->
d_inputs``, where ``d_x`` means ∂E/∂x, the gradient of the loss E with respect to x, with the shape of x. Notation
follows the tutorial: layer l has inputs x^{l-1}, pre-activations z^l, outputs x^l = f(z^l); δ^l = ∂E/∂z^l.
Shapes follow PyTorch: images (N, C, H, W), conv weights (F, C/groups, kh, kw), linear weights (out, in).

``tests/test_scratch.py`` checks every function against ``torch.nn.functional`` and ``torch.autograd`` (float64,
1e-8) and against finite differences; ``docs/tutorial.md`` walks through them. The second half builds a tiny
AlexNet-shaped network from these pieces (``init_tiny``, ``tiny_forward``, ``tiny_backward``, ``train_tiny``) and
its PyTorch twin (``train_tiny_torch``), which reaches the same weights step by step.

Nothing here is fast: it is the formula, written out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Params = dict[str, np.ndarray]

# ----------------------------------------------------------------------------------------------------------------
# helpers


def _windows(x: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """All kh×kw windows of ``x`` (N, C, H, W) with the given stride: a (N, C, Ho, Wo, kh, kw) view, no copy."""
    v = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # (N, C, H-kh+1, W-kw+1, kh, kw)
    return v[:, :, ::stride, ::stride]


def _scatter_windows(dx: np.ndarray, d_win: np.ndarray, stride: int) -> None:
    """The adjoint of ``_windows``: add each window's gradient ``d_win`` (N, C, Ho, Wo, kh, kw) back into ``dx``."""
    ho, wo, kh, kw = d_win.shape[2:]
    for i in range(kh):  # one strided slice per kernel position, not one per output pixel
        for j in range(kw):
            dx[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride] += d_win[..., i, j]


# ----------------------------------------------------------------------------------------------------------------
# convolution


def conv2d_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, padding: int = 0, groups: int = 1
) -> tuple[np.ndarray, dict]:
    """Convolution: z_j^l = Σ_{i∈M_j} x_i^{l-1} * k_ij^l + b_j^l.

    Output map j sums the input maps i in M_j, each cross-correlated with its own kernel k_ij (the tutorial writes
    w_i^l; the kernel depends on both i and j), plus one bias b_j. Like every deep-learning library, "*" here does
    not flip the kernel (cross-correlation): z[n, j, y, x] = Σ_i Σ_{u,v} x[n, i, s·y + u - p, s·x + v - p] k[j, i, u, v]
    + b[j], zero outside the image. Output side: ⌊(H + 2p - kh) / s⌋ + 1.

    ``groups``: M_j is the j-th group's share of the input maps: with ``groups=2`` the first half of the output maps
    sees only the first half of the inputs (AlexNet's conv2, conv4, conv5: the maps on the same GPU, paper §3.2).
    Implemented as im2col: every window becomes a row, and the convolution is one matrix product per group.

    x: (N, C, H, W), w: (F, C/groups, kh, kw), b: (F,) -> z: (N, F, Ho, Wo).
    """
    n, c, _, _ = x.shape
    f, cg, kh, kw = w.shape
    if c != cg * groups or f % groups:
        raise ValueError(f"conv2d: {c} input maps, weights {w.shape}, groups={groups} do not fit together")
    fg = f // groups
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = _windows(xp, kh, kw, stride)  # (N, C, Ho, Wo, kh, kw)
    ho, wo = win.shape[2:4]
    z = np.empty((n, f, ho, wo))
    cols = []
    for g in range(groups):
        # im2col: one row per output pixel, one column per (input map, u, v) of this group
        col = win[:, g * cg : (g + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, cg * kh * kw)
        wg = w[g * fg : (g + 1) * fg].reshape(fg, cg * kh * kw)
        z[:, g * fg : (g + 1) * fg] = (col @ wg.T).reshape(n, ho, wo, fg).transpose(0, 3, 1, 2)
        cols.append(col)
    z += b[None, :, None, None]
    return z, dict(x_shape=x.shape, w=w, cols=cols, stride=stride, padding=padding, groups=groups)


def conv2d_backward(dz: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of a convolution, with δ_j = ∂E/∂z_j:

    ∂E/∂k[j, i, u, v] = Σ_{n,y,x} δ[n, j, y, x] · x[n, i, s·y + u - p, s·x + v - p]  (δ_j correlated with x_i)
    ∂E/∂b[j] = Σ_{n,y,x} δ[n, j, y, x]
    ∂E/∂x_i = Σ_j δ_j convolved with k_ij: each input pixel collects δ times the weight it was multiplied by, from
    every window that covered it (the matrix form's Wᵀ δ; here im2col's transpose, col2im).

    Returns (dx, dw, db) shaped like (x, w, b).
    """
    w, groups, stride, p = cache["w"], cache["groups"], cache["stride"], cache["padding"]
    n, c, h, wd = cache["x_shape"]
    f, cg, kh, kw = w.shape
    fg = f // groups
    ho, wo = dz.shape[2:]
    dxp = np.zeros((n, c, h + 2 * p, wd + 2 * p))
    dw = np.empty_like(w)
    for g in range(groups):
        dzg = dz[:, g * fg : (g + 1) * fg].transpose(0, 2, 3, 1).reshape(n * ho * wo, fg)  # (N·Ho·Wo, F/g)
        dw[g * fg : (g + 1) * fg] = (dzg.T @ cache["cols"][g]).reshape(fg, cg, kh, kw)
        d_col = dzg @ w[g * fg : (g + 1) * fg].reshape(fg, cg * kh * kw)  # (N·Ho·Wo, C/g·kh·kw)
        d_win = d_col.reshape(n, ho, wo, cg, kh, kw).transpose(0, 3, 1, 2, 4, 5)  # (N, C/g, Ho, Wo, kh, kw)
        _scatter_windows(dxp[:, g * cg : (g + 1) * cg], d_win, stride)  # col2im
    db = dz.sum(axis=(0, 2, 3))
    return dxp[:, :, p : p + h, p : p + wd], dw, db


# ----------------------------------------------------------------------------------------------------------------
# non-linearity, normalisation, pooling, dropout


def relu_forward(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ReLU (paper §3.1): f(z) = max(0, z)."""
    return np.maximum(z, 0.0), z


def relu_backward(dx: np.ndarray, z: np.ndarray) -> np.ndarray:
    """δ = ∂E/∂x ∘ f'(z) with f'(z) = 1 where z > 0, else 0 (PyTorch also uses 0 at z = 0)."""
    return dx * (z > 0)


def _channel_window_sum(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """s_i = Σ_{j=i-before}^{i+after} a_j over the channel axis of (N, C, H, W), zero outside [0, C)."""
    c = a.shape[1]
    ap = np.pad(a, ((0, 0), (before, after), (0, 0), (0, 0)))
    return sum(ap[:, i : i + c] for i in range(before + after + 1))


def lrn_forward(
    a: np.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0
) -> tuple[np.ndarray, dict]:
    """Local response normalisation, paper §3.3: b_i = a_i / (k + α Σ_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j²)^β.

    The sum runs over n = ``size`` adjacent maps at the same position; the paper's constants are the defaults
    (k=2, n=5, α=1e-4, β=0.75), with α applied to the sum as in the paper. PyTorch's
    ``F.local_response_norm(a, size, alpha, beta, k)`` uses α/n · Σ instead, so the paper's layer is
    ``F.local_response_norm(a, 5, alpha=1e-4 * 5, beta=0.75, k=2.0)`` (tested). For even n the window is
    i - n/2 ... i + n/2 - 1, as in PyTorch.
    """
    before, after = size // 2, (size - 1) // 2
    d = k + alpha * _channel_window_sum(a * a, before, after)  # the denominator's base, (N, C, H, W)
    return a * d**-beta, dict(a=a, d=d, size=size, alpha=alpha, beta=beta)


def lrn_backward(db: np.ndarray, cache: dict) -> np.ndarray:
    """∂E/∂a_m = ∂E/∂b_m · d_m^-β - 2αβ a_m Σ_{i: m in window(i)} ∂E/∂b_i · a_i · d_i^(-β-1), d_i = k + α Σ a_j²."""
    a, d, size, alpha, beta = cache["a"], cache["d"], cache["size"], cache["alpha"], cache["beta"]
    before, after = size // 2, (size - 1) // 2
    # i sees m when i - before <= m <= i + after, i.e. m - after <= i <= m + before: the mirrored window
    back = _channel_window_sum(db * a * d ** (-beta - 1), after, before)
    return db * d**-beta - 2 * alpha * beta * a * back


def maxpool_forward(x: np.ndarray, size: int = 3, stride: int = 2) -> tuple[np.ndarray, dict]:
    """Max-pooling: y = max of each size×size window, windows ``stride`` apart (no padding).

    Paper §3.4: overlapping pooling, z = 3 > s = 2, so neighbouring windows share a row or column; it lowered the
    paper's top-1 / top-5 error by 0.4% / 0.3% against z = s = 2. Output side: ⌊(H - z) / s⌋ + 1.
    """
    win = _windows(x, size, size, stride)  # (N, C, Ho, Wo, z, z)
    flat = win.reshape(*win.shape[:4], size * size)
    idx = flat.argmax(axis=-1)  # the first maximum of each window, as PyTorch picks
    y = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    return y, dict(x_shape=x.shape, idx=idx, size=size, stride=stride)


def maxpool_backward(dy: np.ndarray, cache: dict) -> np.ndarray:
    """The gradient goes to the input that was the maximum of its window, 0 to the others; overlaps add up."""
    size, idx = cache["size"], cache["idx"]
    d_win = np.zeros((*idx.shape, size * size))
    np.put_along_axis(d_win, idx[..., None], dy[..., None], axis=-1)
    dx = np.zeros(cache["x_shape"])
    _scatter_windows(dx, d_win.reshape(*idx.shape, size, size), cache["stride"])
    return dx


def dropout_forward(
    x: np.ndarray, p: float = 0.5, mask: np.ndarray | None = None, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Dropout (paper §4.2, p = 0.5 in fc6 and fc7): y = x ∘ m / (1 - p), m_i ~ Bernoulli(1 - p), during training.

    This is "inverted" dropout, as ``F.dropout``: kept units are scaled up while training, so at test time the layer
    is the identity (``model.eval()`` in PyTorch). The paper instead multiplied the outputs by 0.5 at test time;
    both give test outputs equal to the expected training output. ``mask`` (0/1, shape of x) fixes the draw,
    else it is drawn from ``rng``. Returns (y, mask).
    """
    if mask is None:
        rng = rng if rng is not None else np.random.default_rng()
        mask = (rng.random(x.shape) >= p).astype(x.dtype)
    return x * mask / (1 - p), mask


def dropout_backward(dy: np.ndarray, mask: np.ndarray, p: float = 0.5) -> np.ndarray:
    """∂E/∂x = ∂E/∂y ∘ m / (1 - p): dropped units get no gradient."""
    return dy * mask / (1 - p)


# ----------------------------------------------------------------------------------------------------------------
# fully connected layer, loss, update


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, dict]:
    """Fully connected layer: z^l = W^l x^{l-1} + b^l, for a batch of row vectors: z = x Wᵀ + b.

    x: (N, in), w: (out, in), b: (out,) -> z: (N, out).
    """
    return x @ w.T + b, dict(x=x, w=w)


def linear_backward(dz: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backpropagation through W: ∂E/∂x^{l-1} = (W^l)ᵀ δ^l, ∂E/∂W^l = δ^l (x^{l-1})ᵀ, ∂E/∂b^l = δ^l.

    With the next activation's derivative this is the tutorial's δ^{l-1} = ((W^l)ᵀ δ^l) ∘ f'(z^{l-1}); the ∘ f' part
    is ``relu_backward``. Batched as rows: dx = δ W, dW = δᵀ x, db = Σ_n δ. Returns (dx, dw, db).
    """
    return dz @ cache["w"], dz.T @ cache["x"], dz.sum(axis=0)


def softmax(z: np.ndarray) -> np.ndarray:
    """softmax(z)_k = exp(z_k) / Σ_j exp(z_j), row-wise (the max is subtracted first; it cancels)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy_forward(z: np.ndarray, labels: np.ndarray) -> tuple[float, dict]:
    """Softmax cross-entropy, the paper's objective (multinomial logistic regression, §3.5): E = -Σ_k t_k log y_k.

    y = softmax(z^L), t one-hot; averaged over the batch, as ``F.cross_entropy``. z: (N, K), labels: (N,) ints.
    """
    y = softmax(z)
    n = z.shape[0]
    loss = float(-np.log(y[np.arange(n), labels]).mean())
    return loss, dict(y=y, labels=labels)


def cross_entropy_backward(cache: dict) -> np.ndarray:
    """δ^L = ∂E/∂z^L = softmax(z^L) - t (divided by N for the batch mean).

    Not the tutorial's (y - t) ∘ f'(z^L): that is the gradient of the squared error E = ½‖y - t‖². With softmax
    and cross-entropy the softmax Jacobian cancels against the log, leaving y - t with no f' factor.
    """
    y, labels = cache["y"], cache["labels"]
    t = np.zeros_like(y)
    t[np.arange(len(labels)), labels] = 1.0
    return (y - t) / len(labels)


def sgd_step(
    w: np.ndarray, grad: np.ndarray, v: np.ndarray, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's update, §5: v ← 0.9·v - 0.0005·ε·w - ε·⟨∂L/∂w⟩, then w ← w + v. Returns (new w, new v).

    ε = ``lr``, ⟨∂L/∂w⟩ = ``grad`` (the batch-mean gradient); v starts at 0. Without momentum and weight decay this
    is the tutorial's Δw = -η ∂E/∂w. PyTorch's ``torch.optim.SGD(lr, momentum, weight_decay)`` keeps
    b ← μ·b + (g + λ·w) and does w ← w - ε·b: the same steps as long as ε is constant (then v = -ε·b). When ε
    changes (a schedule), PyTorch rescales the whole accumulated velocity by the new ε at once, while the paper's v
    keeps the steps already taken at the old ε and only new gradients get the new one, so the two runs differ.
    """
    v = momentum * v - weight_decay * lr * w - lr * grad
    return w + v, v


def numerical_gradient(
    f: Callable[[], float], x: np.ndarray, coords: Sequence[tuple[int, ...]], eps: float = 1e-6
) -> np.ndarray:
    """Central differences (f(x + ε e_i) - f(x - ε e_i)) / 2ε at the given coordinates of ``x`` (restored after).

    Error O(ε²) plus rounding O(1e-16 / ε): about 1e-9 relative at ε = 1e-6 in float64 for smooth f. ReLU kinks and
    max-pool ties are not smooth: keep coordinates at least ε away from them.
    """
    out = np.empty(len(coords))
    for n, i in enumerate(coords):
        old = x[i]
        x[i] = old + eps
        hi = f()
        x[i] = old - eps
        lo = f()
        x[i] = old
        out[n] = (hi - lo) / (2 * eps)
    return out


# ----------------------------------------------------------------------------------------------------------------
# a tiny AlexNet: the paper's layer sequence, 1/6 of its widths or less, for 32-px images

# name -> (in maps, out maps, kernel, stride, padding, groups); paper (Figure 2) in the comments
TINY_CONVS: dict[str, tuple[int, int, int, int, int, int]] = {
    "conv1": (3, 16, 5, 2, 2, 1),  # paper: 96 kernels 11×11×3, stride 4
    "conv2": (16, 32, 3, 1, 1, 2),  # paper: 256 kernels 5×5×48, two groups
    "conv3": (32, 48, 3, 1, 1, 1),  # paper: 384 kernels 3×3×256, sees both groups
    "conv4": (48, 48, 3, 1, 1, 2),  # paper: 384 kernels 3×3×192, two groups
    "conv5": (48, 32, 3, 1, 1, 2),  # paper: 256 kernels 3×3×192, two groups
}
TINY_FCS: dict[str, tuple[int, int]] = {"fc6": (32, 64), "fc7": (64, 64)}  # paper: 4096, 4096; fc8 gets the classes
TINY_SIZE = 32  # px: 32 -> conv1 16 -> pool 7 -> conv2..5 7, 7, ... pool 3 ... pool 1: (N, 32, 1, 1)
TINY_DROPOUT = 0.5  # paper §4.2: fc6 and fc7


def init_tiny(num_classes: int, seed: int = 0) -> Params:
    """He-normal weights (std √(2 / fan_in)) and zero biases for the tiny network, float64.

    Not the paper's N(0, 0.01) with biases 1 (§5): at these widths std 0.01 shrinks the signal layer by layer, and
    on the tutorial's 60-image slice 60 steps at ε = 0.01 or 0.05 left the loss at ln 3 and the accuracy at chance
    (measured, seeds 0 and 1), where He init reaches about 70%.
    """
    rng = np.random.default_rng(seed)
    shapes = {name: (co, ci // g, kk, kk) for name, (ci, co, kk, _, _, g) in TINY_CONVS.items()}
    shapes |= {name: (o, i) for name, (i, o) in TINY_FCS.items()}
    shapes["fc8"] = (num_classes, TINY_FCS["fc7"][1])
    params: Params = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:]))
        params[f"{name}.w"] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        params[f"{name}.b"] = np.zeros(shape[0])
    return params


def tiny_forward(
    params: Params, x: np.ndarray, masks: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray, list[tuple[str, Any]]]:
    """Logits of the tiny AlexNet for x (N, 3, 32, 32), and the caches the backward pass needs.

    Paper order (§3.5): conv1 → ReLU → LRN → max-pool, conv2 → ReLU → LRN → max-pool, conv3 → ReLU, conv4 → ReLU,
    conv5 → ReLU → max-pool, fc6 → ReLU → dropout, fc7 → ReLU → dropout, fc8. Dropout zeroes the outputs of fc6's
    and fc7's neurons, as the paper describes (§4.2); torchvision's AlexNet puts its two dropouts before fc6 and
    before fc7 instead. ``masks`` ({"fc6": m, "fc7": m}, 0/1 arrays of shape (N, 64)) turns dropout on with those
    draws; ``None`` is evaluation mode.
    """
    tape: list[tuple[str, Any]] = []  # (kind, cache) in forward order; the backward pass walks it in reverse
    h = x
    for name, (_, _, _, stride, padding, groups) in TINY_CONVS.items():
        h, c = conv2d_forward(h, params[f"{name}.w"], params[f"{name}.b"], stride, padding, groups)
        tape.append((f"conv:{name}", c))
        h, c = relu_forward(h)
        tape.append(("relu", c))
        if name in ("conv1", "conv2"):  # paper §3.3: LRN after the first two convolutional layers' ReLU
            h, c = lrn_forward(h)
            tape.append(("lrn", c))
        if name in ("conv1", "conv2", "conv5"):  # paper §3.5: max-pooling after both LRNs and after conv5
            h, c = maxpool_forward(h, 3, 2)
            tape.append(("pool", c))
    tape.append(("flatten", h.shape))
    h = h.reshape(h.shape[0], -1)  # (N, 32)
    for name in ("fc6", "fc7", "fc8"):
        h, c = linear_forward(h, params[f"{name}.w"], params[f"{name}.b"])
        tape.append((f"linear:{name}", c))
        if name != "fc8":
            h, c = relu_forward(h)
            tape.append(("relu", c))
            if masks is not None:
                h, m = dropout_forward(h, TINY_DROPOUT, mask=masks[name])
                tape.append(("dropout", m))
    return h, tape


def tiny_backward(dlogits: np.ndarray, tape: list[tuple[str, Any]]) -> Params:
    """Backpropagation: walk the forward tape in reverse, each layer turning ∂E/∂output into ∂E/∂input."""
    grads: Params = {}
    d = dlogits
    for kind, cache in reversed(tape):
        if kind.startswith("linear:"):
            d, grads[f"{kind[7:]}.w"], grads[f"{kind[7:]}.b"] = linear_backward(d, cache)
        elif kind.startswith("conv:"):
            d, grads[f"{kind[5:]}.w"], grads[f"{kind[5:]}.b"] = conv2d_backward(d, cache)
        elif kind == "relu":
            d = relu_backward(d, cache)
        elif kind == "lrn":
            d = lrn_backward(d, cache)
        elif kind == "pool":
            d = maxpool_backward(d, cache)
        elif kind == "dropout":
            d = dropout_backward(d, cache, TINY_DROPOUT)
        elif kind == "flatten":
            d = d.reshape(cache)
    return grads


def tiny_loss_and_grads(
    params: Params, x: np.ndarray, labels: np.ndarray, masks: dict[str, np.ndarray] | None = None
) -> tuple[float, Params]:
    """Forward, softmax cross-entropy, backward: (E, {name: ∂E/∂param})."""
    logits, tape = tiny_forward(params, x, masks)
    loss, cache = cross_entropy_forward(logits, labels)
    return loss, tiny_backward(cross_entropy_backward(cache), tape)


@dataclass
class StepPlan:
    """What one training step uses: which images, and the dropout draws for fc6 and fc7."""

    indices: np.ndarray  # (B,) into the training set
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # {"fc6": (B, 64), "fc7": (B, 64)} of 0/1


def plan_steps(num_images: int, steps: int, batch_size: int, seed: int = 0, dropout: bool = True) -> list[StepPlan]:
    """Batches (a fresh permutation each epoch) and dropout masks for ``steps`` steps, drawn once, so the NumPy and
    the PyTorch runs see exactly the same data and the same dropped units."""
    rng = np.random.default_rng(seed)
    plans, order = [], np.empty(0, dtype=np.int64)
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(num_images)])
        idx, order = order[:batch_size], order[batch_size:]
        masks = {}
        if dropout:
            for name in ("fc6", "fc7"):
                masks[name] = (rng.random((batch_size, TINY_FCS[name][1])) >= TINY_DROPOUT).astype(np.float64)
        plans.append(StepPlan(idx, masks))
    return plans


def train_tiny(
    params: Params, x: np.ndarray, labels: np.ndarray, plans: list[StepPlan], lr: float = 0.01
) -> tuple[list[float], list[Params]]:
    """SGD with the paper's momentum 0.9 and weight decay 5e-4 (``sgd_step``), one step per plan, in NumPy.

    Returns the loss of every step (before its update) and the parameters after every step. ``params`` is not
    changed.
    """
    params = {k: v.copy() for k, v in params.items()}
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    losses, history = [], []
    for plan in plans:
        loss, grads = tiny_loss_and_grads(params, x[plan.indices], labels[plan.indices], plan.masks or None)
        for k in params:
            params[k], velocity[k] = sgd_step(params[k], grads[k], velocity[k], lr)
        losses.append(loss)
        history.append({k: v.copy() for k, v in params.items()})
    return losses, history


def tiny_torch_forward(params: dict, x: Any, masks: dict | None = None) -> Any:
    """The tiny AlexNet in PyTorch (``torch.nn.functional``), layer for layer as ``tiny_forward``.

    ``params``: {name: tensor}; dropout uses the given 0/1 masks (``x * m / (1 - p)`` is what ``F.dropout``
    computes for the mask it draws), so both implementations drop the same units.
    """
    import torch.nn.functional as F

    h = x
    for name, (_, _, _, stride, padding, groups) in TINY_CONVS.items():
        h = F.relu(F.conv2d(h, params[f"{name}.w"], params[f"{name}.b"], stride, padding, groups=groups))
        if name in ("conv1", "conv2"):
            h = F.local_response_norm(h, 5, alpha=1e-4 * 5, beta=0.75, k=2.0)  # PyTorch divides α by n
        if name in ("conv1", "conv2", "conv5"):
            h = F.max_pool2d(h, 3, 2)
    h = h.flatten(1)
    for name in ("fc6", "fc7", "fc8"):
        h = F.linear(h, params[f"{name}.w"], params[f"{name}.b"])
        if name != "fc8":
            h = F.relu(h)
            if masks is not None:
                h = h * masks[name] / (1 - TINY_DROPOUT)
    return h


def train_tiny_torch(
    params: Params, x: np.ndarray, labels: np.ndarray, plans: list[StepPlan], lr: float = 0.01
) -> tuple[list[float], list[Params]]:
    """The same run as ``train_tiny`` with autograd and ``torch.optim.SGD(momentum=0.9, weight_decay=5e-4)``,
    float64. Returns the losses and the parameters after every step as NumPy arrays."""
    import torch
    import torch.nn.functional as F

    tparams = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    opt = torch.optim.SGD(tparams.values(), lr=lr, momentum=0.9, weight_decay=5e-4)
    tx, tlabels = torch.from_numpy(x), torch.from_numpy(labels)
    losses, history = [], []
    for plan in plans:
        idx = torch.from_numpy(plan.indices)
        masks = {k: torch.from_numpy(m) for k, m in plan.masks.items()} or None
        loss = F.cross_entropy(tiny_torch_forward(tparams, tx[idx], masks), tlabels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        history.append({k: v.detach().numpy().copy() for k, v in tparams.items()})
    return losses, history


def accuracy(params: Params, x: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the tiny network in evaluation mode (no dropout)."""
    logits, _ = tiny_forward(params, x)
    return float((logits.argmax(axis=1) == labels).mean())


# ----------------------------------------------------------------------------------------------------------------
# data: a slice of the built-in data set


def load_slice(
    root: str | os.PathLike, classes: int | Sequence[str] = 3, per_class: int = 20, size: int = TINY_SIZE
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The first ``per_class`` images of each class in ``root/train/<class>/`` as float64 (N, 3, size, size).

    ``classes``: how many class folders (the first, sorted by name) or their names. Images are shrunk with a box
    filter (each output pixel the mean of the input pixels it covers) and every channel is normalised to mean 0,
    std 1 over the slice. Returns (x, labels, class names).
    """
    from PIL import Image

    train = Path(root) / "train"
    if not train.is_dir():
        raise FileNotFoundError(f"{train} does not exist: pass a data set folder with train/<class>/ images")
    if isinstance(classes, int):
        names = sorted(p.name for p in train.iterdir() if p.is_dir())[:classes]
    else:
        names = list(classes)
    images, labels = [], []
    for label, name in enumerate(names):
        files = sorted(f for f in (train / name).iterdir() if f.is_file())[:per_class]
        if len(files) < per_class:
            raise ValueError(f"{train / name} has {len(files)} images, fewer than per_class={per_class}")
        for f in files:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BOX)))
            labels.append(label)
    x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float64) / 255.0  # (N, 3, size, size) in [0, 1]
    x = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / x.std(axis=(0, 2, 3), keepdims=True)
    return x, np.asarray(labels, dtype=np.int64), names
