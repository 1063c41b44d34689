"""alexnet.scratch: every NumPy layer against torch.nn.functional (forward), torch.autograd (backward, float64, 1e-8)
and central finite differences; the paper's SGD update against torch.optim.SGD; the tiny AlexNet trained in NumPy
against the same run in PyTorch, step by step."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet import scratch as S
from alexnet.data.synthetic import make_synthetic

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-8  # float64: NumPy and PyTorch sum in different orders, so not bit-equal, but far inside this
FD_RTOL, FD_ATOL = 1e-6, 1e-8  # central differences at ε = 1e-6 carry ~1e-9 relative error of their own


def close(actual, expected, tol=TOL):
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def t64(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def autograd(fn, inputs: list[np.ndarray], upstream: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """fn(*tensors) and the gradients of Σ fn(...) ∘ upstream with respect to every input."""
    ts = [t64(a, grad=True) for a in inputs]
    out = fn(*ts)
    (out * t64(upstream)).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


def some_coords(shape, n: int, rng) -> list[tuple[int, ...]]:
    return [tuple(int(rng.integers(s)) for s in shape) for _ in range(n)]


def finite_differences(forward, arrays: list[np.ndarray], upstream: np.ndarray, rng, n: int = 6):
    """Numerical gradients of Σ forward() ∘ upstream at ``n`` coordinates of each array (changed in place)."""
    loss = lambda: float((forward() * upstream).sum())  # noqa: E731
    out = []
    for a in arrays:
        coords = some_coords(a.shape, n, rng)
        out.append((coords, S.numerical_gradient(loss, a, coords)))
    return out


# ----------------------------------------------------------------------------------------------------------------
# convolution

CONV_CASES = {
    # name: (x shape, w shape, stride, padding, groups)
    "plain": ((2, 3, 9, 9), (4, 3, 3, 3), 1, 0, 1),
    "conv1-like": ((2, 3, 27, 27), (6, 3, 11, 11), 4, 2, 1),  # 11×11, stride 4, pad 2, as AlexNet's conv1
    "groups": ((2, 6, 8, 8), (4, 3, 5, 5), 1, 2, 2),  # conv2-like: two groups
    "groups-stride-rect": ((1, 4, 11, 8), (6, 2, 3, 3), 2, 1, 2),  # non-square, stride 2, two groups
    "groups-3": ((2, 6, 6, 6), (9, 2, 3, 3), 1, 1, 3),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_matches_torch_forward_and_autograd(case):
    xs, ws, stride, padding, groups = CONV_CASES[case]
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=xs), rng.normal(size=ws), rng.normal(size=ws[0])
    z, cache = S.conv2d_forward(x, w, b, stride, padding, groups)
    dz = rng.normal(size=z.shape)
    z_ref, (dx_ref, dw_ref, db_ref) = autograd(
        lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups), [x, w, b], dz
    )
    close(z, z_ref)
    dx, dw, db = S.conv2d_backward(dz, cache)
    close(dx, dx_ref)
    close(dw, dw_ref)
    close(db, db_ref)


@pytest.mark.parametrize("case", ["conv1-like", "groups-stride-rect"])
def test_conv2d_backward_matches_finite_differences(case):
    xs, ws, stride, padding, groups = CONV_CASES[case]
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=xs), rng.normal(size=ws), rng.normal(size=ws[0])
    z, cache = S.conv2d_forward(x, w, b, stride, padding, groups)
    dz = rng.normal(size=z.shape)
    grads = S.conv2d_backward(dz, cache)
    fd = finite_differences(lambda: S.conv2d_forward(x, w, b, stride, padding, groups)[0], [x, w, b], dz, rng)
    for g, (coords, numeric) in zip(grads, fd):
        np.testing.assert_allclose([g[c] for c in coords], numeric, rtol=FD_RTOL, atol=FD_ATOL)


def test_conv2d_rejects_weights_that_do_not_fit_the_groups():
    with pytest.raises(ValueError, match="groups=2"):
        S.conv2d_forward(np.zeros((1, 6, 5, 5)), np.zeros((4, 6, 3, 3)), np.zeros(4), groups=2)


# ----------------------------------------------------------------------------------------------------------------
# ReLU, LRN, max-pooling, dropout


def test_relu_matches_torch():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3, 4, 5, 5))
    z[0, 0, 0, 0] = 0.0  # PyTorch's ReLU gradient at exactly 0 is 0
    dx = rng.normal(size=z.shape)
    x_ref, (dz_ref,) = autograd(F.relu, [z], dx)
    x, cache = S.relu_forward(z)
    close(x, x_ref)
    close(S.relu_backward(dx, cache), dz_ref)
    assert S.relu_backward(np.ones(1), np.zeros(1))[0] == 0.0


@pytest.mark.parametrize("size", [5, 4, 3])
def test_lrn_with_paper_constants_matches_torch_with_alpha_times_n(size):
    """Paper §3.3 (k=2, n=5, α=1e-4, β=0.75) is F.local_response_norm with alpha = α·n; also even n's window."""
    rng = np.random.default_rng(3)
    a = np.abs(rng.normal(scale=20.0, size=(2, 8, 4, 4)))  # large enough for the α term to matter
    db = rng.normal(size=a.shape)
    b_ref, (da_ref,) = autograd(lambda t: F.local_response_norm(t, size, alpha=1e-4 * size, beta=0.75, k=2.0), [a], db)
    b, cache = S.lrn_forward(a, size=size)
    close(b, b_ref)
    close(S.lrn_backward(db, cache), da_ref)
    # torch with the paper's α unchanged is a different layer: the division by n is real
    assert np.abs(b - F.local_response_norm(t64(a), size, alpha=1e-4, beta=0.75, k=2.0).numpy()).max() > 1e-3


def test_lrn_one_value_by_hand():
    """b at one position, from the paper's formula written out: channels max(0, i - 2) .. min(N - 1, i + 2)."""
    a = np.arange(1, 1 + 7 * 2 * 2, dtype=np.float64).reshape(1, 7, 2, 2) * 10
    b, _ = S.lrn_forward(a)
    for i in (0, 1, 3, 6):
        s = sum(a[0, j, 1, 0] ** 2 for j in range(max(0, i - 2), min(6, i + 2) + 1))
        assert b[0, i, 1, 0] == pytest.approx(a[0, i, 1, 0] / (2 + 1e-4 * s) ** 0.75, rel=1e-14)


def test_lrn_backward_matches_finite_differences():
    rng = np.random.default_rng(4)
    a = rng.normal(scale=20.0, size=(1, 7, 3, 3))
    db = rng.normal(size=a.shape)
    _, cache = S.lrn_forward(a)
    da = S.lrn_backward(db, cache)
    [(coords, numeric)] = finite_differences(lambda: S.lrn_forward(a)[0], [a], db, rng, n=8)
    np.testing.assert_allclose([da[c] for c in coords], numeric, rtol=FD_RTOL, atol=FD_ATOL)


@pytest.mark.parametrize("shape", [(2, 3, 13, 13), (1, 2, 8, 11)])
def test_overlapping_maxpool_matches_torch(shape):
    rng = np.random.default_rng(5)
    x = rng.normal(size=shape)
    y, cache = S.maxpool_forward(x, 3, 2)
    dy = rng.normal(size=y.shape)
    y_ref, (dx_ref,) = autograd(lambda t: F.max_pool2d(t, 3, 2), [x], dy)
    close(y, y_ref)
    close(S.maxpool_backward(dy, cache), dx_ref)
    assert y.shape[2:] == ((shape[2] - 3) // 2 + 1, (shape[3] - 3) // 2 + 1)


def test_maxpool_backward_matches_finite_differences_where_windows_overlap():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1, 2, 7, 7))
    y, cache = S.maxpool_forward(x)
    dy = rng.normal(size=y.shape)
    dx = S.maxpool_backward(dy, cache)
    # every input of the 7×7 map, so the overlapping rows / columns (2 and 4) are included
    coords = [(0, c, i, j) for c in range(2) for i in range(7) for j in range(7)]
    numeric = S.numerical_gradient(lambda: float((S.maxpool_forward(x)[0] * dy).sum()), x, coords)
    np.testing.assert_allclose([dx[c] for c in coords], numeric, rtol=FD_RTOL, atol=FD_ATOL)


def test_dropout_matches_torch_for_the_same_mask():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 32)) + 5.0  # no exact zeros, so torch's mask is where its output is nonzero
    dy = rng.normal(size=x.shape)
    torch.manual_seed(0)
    y_ref, (dx_ref,) = autograd(lambda t: F.dropout(t, 0.5, training=True), [x], dy)
    mask = (y_ref != 0).astype(np.float64)
    y, m = S.dropout_forward(x, 0.5, mask=mask)
    close(y, y_ref)
    close(S.dropout_backward(dy, m, 0.5), dx_ref)


def test_dropout_keeps_half_and_preserves_the_mean():
    x = np.ones((200, 500))
    y, mask = S.dropout_forward(x, 0.5, rng=np.random.default_rng(8))
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert abs(mask.mean() - 0.5) < 0.01  # 100,000 draws: std 0.0016
    assert abs(y.mean() - 1.0) < 0.02  # inverted dropout: the expected output is the input


# ----------------------------------------------------------------------------------------------------------------
# linear, loss


def test_linear_matches_torch():
    rng = np.random.default_rng(9)
    x, w, b = rng.normal(size=(5, 7)), rng.normal(size=(3, 7)), rng.normal(size=3)
    z, cache = S.linear_forward(x, w, b)
    dz = rng.normal(size=z.shape)
    z_ref, grads_ref = autograd(F.linear, [x, w, b], dz)
    close(z, z_ref)
    for g, g_ref in zip(S.linear_backward(dz, cache), grads_ref):
        close(g, g_ref)
    fd = finite_differences(lambda: S.linear_forward(x, w, b)[0], [x, w, b], dz, rng)
    for g, (coords, numeric) in zip(S.linear_backward(dz, cache), fd):
        np.testing.assert_allclose([g[c] for c in coords], numeric, rtol=FD_RTOL, atol=FD_ATOL)


def test_softmax_cross_entropy_gradient_is_softmax_minus_target():
    rng = np.random.default_rng(10)
    z, labels = rng.normal(scale=3.0, size=(6, 4)), np.array([0, 3, 1, 1, 2, 0])
    loss, cache = S.cross_entropy_forward(z, labels)
    zt = t64(z, grad=True)
    ref = F.cross_entropy(zt, torch.from_numpy(labels))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=TOL)
    dz = S.cross_entropy_backward(cache)
    close(dz, zt.grad.numpy())
    close(dz * len(labels), S.softmax(z) - np.eye(4)[labels])  # δ^L = softmax(z^L) - t, per sample
    [(coords, numeric)] = finite_differences(
        lambda: np.array(S.cross_entropy_forward(z, labels)[0]), [z], np.array(1.0), rng
    )
    np.testing.assert_allclose([dz[c] for c in coords], numeric, rtol=FD_RTOL, atol=FD_ATOL)


def test_the_tutorials_output_delta_is_the_squared_error_one():
    """δ^L = (y - t) ∘ f'(z^L) is ∂/∂z of ½‖f(z) - t‖² (here f = sigmoid), not of softmax cross-entropy."""
    rng = np.random.default_rng(11)
    z, t = rng.normal(size=(1, 5)), np.eye(5)[[2]]
    y = 1 / (1 + np.exp(-z))
    zt = t64(z, grad=True)
    (0.5 * ((torch.sigmoid(zt) - t64(t)) ** 2).sum()).backward()
    close((y - t) * y * (1 - y), zt.grad.numpy())
    _, cache = S.cross_entropy_forward(z, np.array([2]))
    assert np.abs(S.cross_entropy_backward(cache) - (y - t) * y * (1 - y)).max() > 0.05


def test_numerical_gradient_of_a_cube():
    x = np.array([0.5, -2.0, 3.0])
    g = S.numerical_gradient(lambda: float((x**3).sum()), x, [(0,), (1,), (2,)])
    np.testing.assert_allclose(g, 3 * x**2, rtol=1e-9)
    assert x.tolist() == [0.5, -2.0, 3.0]  # restored


# ----------------------------------------------------------------------------------------------------------------
# the paper's update


def _quadratic_grad(w: np.ndarray, target: np.ndarray) -> np.ndarray:
    return 2 * (w - target)  # gradient of ‖w - target‖²: a trajectory that depends on every earlier step


def _run_both(lrs: list[float]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(12)
    w0, target = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    w, v = w0.copy(), np.zeros_like(w0)
    for lr in lrs:
        w, v = S.sgd_step(w, _quadratic_grad(w, target), v, lr)
    wt = t64(w0, grad=True)
    opt = torch.optim.SGD([wt], lr=lrs[0], momentum=0.9, weight_decay=5e-4)
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        wt.grad = torch.from_numpy(_quadratic_grad(wt.detach().numpy(), target))
        opt.step()
    return w, wt.detach().numpy()


def test_paper_sgd_equals_torch_sgd_at_constant_lr():
    w, w_torch = _run_both([0.05] * 30)
    close(w, w_torch)


def test_paper_sgd_differs_from_torch_sgd_when_lr_changes():
    """A schedule (÷10 after 15 steps): PyTorch rescales the accumulated velocity, the paper's update does not."""
    w, w_torch = _run_both([0.05] * 15 + [0.005] * 15)
    assert np.abs(w - w_torch).max() > 1e-3


def test_sgd_step_by_hand():
    w, v = S.sgd_step(np.array([2.0]), np.array([0.5]), np.array([0.1]), lr=0.01)
    expected_v = 0.9 * 0.1 - 0.0005 * 0.01 * 2.0 - 0.01 * 0.5
    assert v[0] == pytest.approx(expected_v, rel=1e-15)
    assert w[0] == pytest.approx(2.0 + expected_v, rel=1e-15)


# ----------------------------------------------------------------------------------------------------------------
# the tiny AlexNet


@pytest.fixture(scope="module")
def slice_root(tmp_path_factory):
    """The built-in data set's first 20 images of three classes (the same files as in the full set)."""
    return make_synthetic(tmp_path_factory.mktemp("slice"), classes=3, per_class=20, val_per_class=0)


@pytest.fixture(scope="module")
def data_slice(slice_root):
    return S.load_slice(slice_root, classes=3, per_class=20)  # at 32 px


def test_load_slice(data_slice, tmp_path):
    x, labels, names = data_slice
    assert x.shape == (60, 3, 32, 32) and x.dtype == np.float64
    assert names == ["circle", "ring", "square"]
    assert labels.tolist() == [0] * 20 + [1] * 20 + [2] * 20
    close(x.mean(axis=(0, 2, 3)), np.zeros(3))
    close(x.std(axis=(0, 2, 3)), np.ones(3))
    with pytest.raises(FileNotFoundError, match="train"):
        S.load_slice(tmp_path)


def test_tiny_network_gradients_match_autograd_and_finite_differences(data_slice):
    x, labels, _ = data_slice
    params = S.init_tiny(3, seed=1)
    plan = S.plan_steps(len(x), 1, 8, seed=1)[0]
    xb, yb = x[plan.indices], labels[plan.indices]
    loss, grads = S.tiny_loss_and_grads(params, xb, yb, plan.masks)

    tparams = {k: t64(v, grad=True) for k, v in params.items()}
    masks = {k: torch.from_numpy(m) for k, m in plan.masks.items()}
    ref = F.cross_entropy(S.tiny_torch_forward(tparams, torch.from_numpy(xb), masks), torch.from_numpy(yb))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=TOL)
    assert set(grads) == set(params)
    for k in params:
        close(grads[k], tparams[k].grad.numpy())

    rng = np.random.default_rng(13)
    for k in ("conv1.w", "conv4.w", "fc6.b"):
        coords = some_coords(params[k].shape, 3, rng)
        numeric = S.numerical_gradient(lambda: S.tiny_loss_and_grads(params, xb, yb, plan.masks)[0], params[k], coords)
        np.testing.assert_allclose([grads[k][c] for c in coords], numeric, rtol=FD_RTOL, atol=FD_ATOL)


def train_both(root: str) -> dict:
    """60 steps of the tiny AlexNet on the slice in NumPy and in PyTorch: per-step differences, losses, learning."""
    x, labels, _ = S.load_slice(root, classes=3, per_class=20)
    params = S.init_tiny(3, seed=0)
    plans = S.plan_steps(len(x), 60, 20, seed=0)
    losses, history = S.train_tiny(params, x, labels, plans, lr=0.01)
    losses_t, history_t = S.train_tiny_torch(params, x, labels, plans, lr=0.01)

    def full_loss(p):
        return S.cross_entropy_forward(S.tiny_forward(p, x)[0], labels)[0]

    return dict(
        max_diff=[max(float(np.abs(p[k] - q[k]).max()) for k in p) for p, q in zip(history, history_t)],
        losses=losses,
        losses_torch=losses_t,
        loss_before=full_loss(params),
        loss_after=full_loss(history[-1]),
        accuracy=S.accuracy(history[-1], x, labels),
    )


@pytest.mark.slow
def test_numpy_training_equals_pytorch_step_by_step_and_learns(slice_root):
    # In a child process with one BLAS / OpenMP thread: these float64 ops are small, and with two threads per library
    # on 2 shared cores this test measured 77 s instead of 5 s (threads spinning while other jobs held the cores).
    code = f"import json; from tests.test_scratch import train_both; print(json.dumps(train_both({str(slice_root)!r})))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(proc.stdout.splitlines()[-1])

    assert len(run["max_diff"]) == 60
    off = [(step + 1, d) for step, d in enumerate(run["max_diff"]) if not d <= TOL]
    assert not off, f"(step, max |numpy - torch|) beyond {TOL}: {off[:5]}"
    close(run["losses"], run["losses_torch"])
    assert run["loss_after"] < 0.75 * run["loss_before"], (run["loss_before"], run["loss_after"])
    assert run["accuracy"] >= 0.6  # chance: 1/3
