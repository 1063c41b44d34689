"""Both AlexNets against independent references: torchvision's model, the paper's numbers, hand computation."""

import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from alexnet import AlexNet, AlexNet2012, UserError, create_model, list_models
from alexnet.model import MIN_INPUT_SIZE, count_params
from alexnet.shared_fc6 import SharedFc6
from alexnet.summary import layer_table


def test_state_dict_matches_torchvision_keys_and_shapes():
    ours = AlexNet().state_dict()
    ref = torchvision.models.alexnet(weights=None).state_dict()
    assert list(ours) == list(ref)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}


@pytest.mark.parametrize("size", [224, 63, 100])
def test_outputs_match_torchvision_with_same_weights(size):
    torch.manual_seed(0)
    ref = torchvision.models.alexnet(weights=None).eval()
    ours = AlexNet().eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("size,dropout", [(64, 0.0), (99, 0.0), (195, 0.0), (64, 0.5), (224, 0.0)])
def test_training_forward_and_gradients_match_torchvision(size, dropout):
    """Below a 6x6 conv5 map training folds the average pool into fc6 (model._small_map_forward): the logits and
    every parameter's gradient must still be torchvision's, in training mode. With dropout the plain path runs, so the
    same seed gives the same masks."""
    torch.manual_seed(0)
    ref = torchvision.models.alexnet(weights=None, num_classes=5, dropout=dropout).train()
    ours = AlexNet(num_classes=5, dropout=dropout).train()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 3, size, size)
    outs, grads = [], []
    for model in (ours, ref):
        torch.manual_seed(1)
        out = model(x)
        outs.append(out)
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, 5)).sum(), list(model.parameters())))
    assert (outs[0] - outs[1]).abs().max().item() <= 1e-5
    for (name, _), g, g_ref in zip(ours.named_parameters(), *grads, strict=True):
        assert (g - g_ref).abs().max().item() <= 1e-5 * (1 + g_ref.abs().max().item()), name


def test_evaluation_folds_the_pool_but_not_for_hooks_or_exports(monkeypatch):
    """Evaluation folds the pool into fc6 too (its outputs: test_outputs_match_torchvision_with_same_weights at 63
    and 100 px), except when a hook waits on a module the fold skips, or the model is being exported."""
    model = AlexNet(num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    folded, fold = [], model._small_map_forward
    monkeypatch.setattr(model, "_small_map_forward", lambda f: folded.append(1) or fold(f))
    with torch.no_grad():
        model(x)
        assert folded == [1]
        hooked = []
        handle = model.classifier[1].register_forward_hook(lambda *_: hooked.append(1))
        model(x)
        handle.remove()
    assert hooked == [1] and folded == [1]
    graph = torch.export.export(model, (x,)).graph
    assert folded == [1] and not any("eye" in str(node.target) for node in graph.nodes)


@pytest.mark.parametrize("nesterov", [False, True])
def test_a_shared_fc6_follows_torchvisions_sgd_trajectory(nesterov):
    """At 64 px conv5 is one cell and fc6's 36 blocks see copies of it: ``share_fc6`` trains one block for all in a
    group of lr / 36 and weight decay x 36. Against torchvision's AlexNet trained by ``torch.optim.SGD`` (float64,
    momentum, weight decay, a changing lr): the same logits after every step, and the sums of fc6's blocks agree."""
    torch.manual_seed(0)
    ref = torchvision.models.alexnet(weights=None, num_classes=4, dropout=0.0).double().train()
    ours = AlexNet(num_classes=4, dropout=0.0).double().train()
    ours.load_state_dict(ref.state_dict())
    assert ours.share_fc6(64) and isinstance(ours.classifier[1], SharedFc6)
    hyper = dict(momentum=0.9, nesterov=nesterov, weight_decay=0.05)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.0, **hyper)
    opt = torch.optim.SGD(ours.param_groups(weight_decay=0.05), lr=0.0, **hyper)
    x, y = torch.randn(6, 3, 64, 64, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    for lr in (0.02, 0.05, 0.03, 0.01):
        for model, o in ((ref, opt_ref), (ours, opt)):
            for group in o.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)
            o.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            o.step()
        assert torch.allclose(ours(x), ref(x), rtol=1e-9, atol=1e-9)
    blocks = ref.classifier[1].weight.detach().view(4096, 256, 36)
    assert torch.allclose(36 * ours.classifier[1].weight.detach(), blocks.sum(-1), rtol=1e-9, atol=1e-9)


def test_a_shared_fc6_under_cpu_bf16_autocast_is_as_close_to_fp32_as_plain_fc6():
    """bf16 autocast + channels-last, the path the CPU-path measurement picks on CPUs with bf16 units: the shared
    model's logits and gradients (its block's: the sum of the 36 blocks') are as close to fp32's as plain fc6's are
    (bf16 alone moves these gradients by ~20% at init: ReLU masks flip)."""
    torch.manual_seed(0)
    start = AlexNet(num_classes=4, dropout=0.0, init="kaiming").state_dict()
    x, y = torch.randn(8, 3, 64, 64).contiguous(memory_format=torch.channels_last), torch.tensor([0, 1, 2, 3] * 2)

    def run(shared: bool, bf16: bool) -> tuple[torch.Tensor, dict]:
        model = AlexNet(num_classes=4, dropout=0.0)
        model.load_state_dict(start)
        assert not shared or model.share_fc6(64)
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        assert out.dtype == (torch.bfloat16 if bf16 else torch.float32)
        nn.functional.cross_entropy(out.float(), y).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if n.endswith("weight")}
        grads["classifier.1.weight"] = grads["classifier.1.weight"].view(4096, 256, -1).sum(-1)
        return out.detach().float(), grads

    def error(a, b):
        return float((a - b).norm() / b.norm())

    ref_logits, ref = run(shared=False, bf16=False)
    (plain_logits, plain), (shared_logits, shared) = run(False, True), run(True, True)
    assert error(shared_logits, ref_logits) < max(0.02, 1.5 * error(plain_logits, ref_logits))
    for name, g in ref.items():
        assert error(shared[name], g) < 1.3 * error(plain[name], g) + 0.02, name


def test_a_shared_fc6_saves_plain_fc6_and_loads_back_exactly():
    """``state_dict`` is torchvision's (36 copies of the block): a plain AlexNet loading it gives the same outputs at
    64 px, and a shared one gets its block back bit for bit (a resumed run continues exactly). Where the conv5 map
    has more than one cell, or dropout masks the copies apart, nothing is shared."""
    torch.manual_seed(0)
    shared = AlexNet(num_classes=3, dropout=0.0)
    assert shared.share_fc6(64)
    state = shared.state_dict()
    plain_state = AlexNet(num_classes=3).state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in plain_state.items()}
    plain, again = AlexNet(num_classes=3).eval(), AlexNet(num_classes=3, dropout=0.0)
    plain.load_state_dict(state)
    assert again.share_fc6(64)
    again.load_state_dict(state)
    assert torch.equal(again.classifier[1].weight, shared.classifier[1].weight)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(plain(x), shared.eval()(x), atol=1e-5)
        z = torch.randn(1, 3, 160, 160)  # a 3x3 map: the plain path; the same network at any size
        assert torch.allclose(plain(z), shared(z), atol=1e-5)
    assert not AlexNet(dropout=0.0).share_fc6(100) and not AlexNet(dropout=0.5).share_fc6(64)


def test_parameter_counts():
    assert count_params(AlexNet()) == 61_100_840  # torchvision's documented num_params
    # The paper's network by hand: conv weights (out * in/groups * k * k) + biases, then the three fc layers.
    convs = [(96, 3, 11, 1), (256, 96, 5, 2), (384, 256, 3, 1), (384, 384, 3, 2), (256, 384, 3, 2)]
    expected = sum(o * (i // g) * k * k + o for o, i, k, g in convs)
    expected += 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
    assert count_params(AlexNet2012()) == expected == 60_965_224  # "60 million parameters" (paper abstract)
    assert count_params(AlexNet(num_classes=10)) == 61_100_840 - 4096 * 990 - 990


@pytest.mark.parametrize("size", [224, 227])
def test_paper_network_feature_map_sizes(size):
    """paper Figure 2: 55 (56 at 227 with our padding) -> 27 -> 13 -> 13 -> 13 -> 6."""
    rows = {r.name: r.out_shape for r in layer_table(AlexNet2012(num_classes=10), size)}
    assert rows["features.0"] == (96, 55 if size == 224 else 56, 55 if size == 224 else 56)
    assert rows["features.3"] == (96, 27, 27)
    assert rows["features.4"] == (256, 27, 27)
    assert rows["features.7"] == (256, 13, 13)
    assert rows["features.8"] == (384, 13, 13)
    assert rows["features.10"] == (384, 13, 13)
    assert rows["features.12"] == (256, 13, 13)
    assert rows["features.14"] == (256, 6, 6)
    assert rows["classifier.6"] == (10,)


def test_paper_network_groups_and_layers():
    m = AlexNet2012()
    convs = [mod for mod in m.features if isinstance(mod, nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    lrns = [i for i, mod in enumerate(m.features) if isinstance(mod, nn.LocalResponseNorm)]
    assert lrns == [2, 6]  # after the ReLUs of conv1 and conv2, before pooling
    assert isinstance(m.features[lrns[0] - 1], nn.ReLU) and isinstance(m.features[lrns[0] + 1], nn.MaxPool2d)


def test_lrn_matches_the_papers_formula_by_hand():
    """paper §3.3: b = a / (k + α Σ_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j²)^β, k=2, n=5, α=1e-4, β=0.75."""
    lrn = AlexNet2012().features[2]
    torch.manual_seed(0)
    a = torch.rand(1, 8, 3, 3) * 50  # large activations so the α term matters
    k, n, alpha, beta = 2.0, 5, 1e-4, 0.75
    expected = torch.empty_like(a)
    channels = a.shape[1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        s = sum(a[0, j] ** 2 for j in range(lo, hi + 1))
        expected[0, i] = a[0, i] / (k + alpha * s) ** beta
    assert torch.allclose(lrn(a), expected, rtol=1e-5, atol=1e-6)
    # and the effect is not negligible at these magnitudes: the test can tell α from α/n
    assert (lrn(a) - a / k**beta).abs().max() > 1e-2


def test_paper_init_statistics():
    torch.manual_seed(0)
    m = AlexNet2012()
    layers = [mod for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 8
    for i, layer in enumerate(layers):
        w = layer.weight
        assert abs(w.mean().item()) < 2e-3
        assert math.isclose(w.std().item(), 0.01, rel_tol=0.05)
        bias = 1.0 if i in (1, 3, 4, 5, 6) else 0.0  # conv2, conv4, conv5, fc6, fc7 (paper §5)
        assert torch.all(layer.bias == bias), f"layer {i}"


def test_min_input_size_and_rectangular_inputs():
    for m in (AlexNet(num_classes=3), AlexNet2012(num_classes=3)):
        m.eval()
        assert m(torch.randn(1, 3, MIN_INPUT_SIZE, MIN_INPUT_SIZE)).shape == (1, 3)
        assert m(torch.randn(1, 3, 64, 96)).shape == (1, 3)
        with pytest.raises(RuntimeError):
            m(torch.randn(1, 3, MIN_INPUT_SIZE - 1, MIN_INPUT_SIZE - 1))


def test_channels_last_gives_same_output():
    m = AlexNet2012(num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = m(x)
        m = m.to(memory_format=torch.channels_last)
        out = m(x.to(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-5)


def test_registry():
    assert list_models() == ["alexnet", "alexnet2012"]
    assert isinstance(create_model("alexnet2012", num_classes=7, dropout=0.3), AlexNet2012)
    assert create_model("alexnet", num_classes=7).classifier[0].p == 0.5
    with pytest.raises(ValueError, match="name must be one of alexnet, alexnet2012, got 'vgg16'"):
        create_model("vgg16")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "num_classes must be a positive whole number, got 0"),  # built a model with no outputs
        ({"num_classes": "10"}, "num_classes must be a positive whole number, got '10'"),
        ({"num_classes": 2.0}, "num_classes must be a positive whole number, got 2.0"),
        ({"num_classes": True}, "num_classes must be a positive whole number, got True"),
        ({"in_channels": 0}, "in_channels must be 1 (grayscale) or 3 (RGB), got 0"),
        ({"in_channels": "3"}, "in_channels must be 1 (grayscale) or 3 (RGB), got '3'"),
        ({"dropout": "0.5"}, "dropout must be a probability from 0 to 1, got '0.5'"),
    ],
)
def test_create_model_names_a_wrong_argument(kwargs, message):
    """Each was a torch traceback (``empty(): argument 'size'``, ``'<' not supported``) or a silent empty head."""
    with pytest.raises(UserError) as e:
        create_model("alexnet", **kwargs)
    assert str(e.value) == message and isinstance(e.value, TypeError) and isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    ("x", "got"),
    [
        (
            np.zeros((1, 3, 64, 64), np.float32),
            "got a numpy.ndarray; for image files, PIL images or arrays use alexnet",
        ),
        ("cat.jpg", "got a str; for image files"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "got uint8 (1, 3, 64, 64)"),
        (torch.zeros(3, 64, 64), "got float32 (3, 64, 64)"),
        (torch.zeros(1, 1, 64, 64), "got float32 (1, 1, 64, 64)"),
        (torch.zeros(1, 3, 32, 32), "got float32 (1, 3, 32, 32)"),
    ],
)
def test_extract_says_what_input_it_takes(x, got):
    """Each was a traceback from inside conv2d or linear (``mat1 and mat2 shapes cannot be multiplied``)."""
    m = create_model("alexnet", num_classes=3).eval()
    want = "x must be a normalised float tensor (B, 3, H, W), H and W at least 63 px, "
    with pytest.raises(UserError) as e:
        m.extract(x, "fc7")
    assert str(e.value).startswith(want + got)


@pytest.mark.parametrize("arch", ["alexnet", "alexnet2012"])
def test_extract_features_uses_the_same_modules(arch):
    m = create_model(arch, num_classes=4).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert m.extract(x, "conv5").shape == (3, 256, 6, 6)
        fc6, fc7 = m.extract(x, "fc6"), m.extract(x, "fc7")
        assert fc6.shape == fc7.shape == (3, 4096)
        assert (fc7 >= 0).all()  # post-ReLU
        # fc7 fed through fc8 by hand gives the logits
        assert torch.allclose(m.classifier[6](fc7), m(x), atol=1e-5)
        assert torch.allclose(m.extract(x, "logits"), m(x))
    with pytest.raises(ValueError, match="layer must be one of conv5, fc6, fc7, logits, got 'fc9'"):
        m.extract(x, "fc9")


def test_flops_match_the_known_total():
    """torchvision AlexNet at 224 px: 0.714 GMAC = 1.43 GFLOP forward (torchvision's docs: 0.71 GFLOPS)."""
    rows = layer_table(AlexNet(), 224)
    total = sum(r.flops for r in rows)
    assert abs(total / 2e9 - 0.714) < 0.001
    conv1 = rows[0]
    assert conv1.flops == 2 * 64 * 55 * 55 * 3 * 11 * 11  # by hand: 2 * out elements * MACs per output
    assert sum(r.params for r in rows) == 61_100_840
