"""The two AlexNets and a small model registry.

- ``AlexNet``: torchvision's single-tower network (Krizhevsky 2014, "One weird trick"): 64-192-384-256-256
  channels, adaptive 6x6 average pool, dropout classifier. Its ``state_dict`` is key-for-key and shape-for-shape
  torchvision's, so torchvision's ImageNet weights file loads unchanged.
- ``AlexNet2012``: the network of Krizhevsky, Sutskever & Hinton (NeurIPS 2012): 96-256-384-384-256 channels, the
  two-GPU split as ``groups=2`` in conv2/conv4/conv5, local response normalisation after conv1 and conv2, and the
  paper's initialisation.

Both share one layout (``features`` -> ``avgpool`` -> ``classifier``) so feature extraction, weight loading and
export treat them alike. Input size: any square or rectangular image of at least 63 px per side.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from .arguments import one_of, positive_int
from .errors import ArgumentError
from .shared_fc6 import POOL_CELLS, SharedFc6, share_fc6

MIN_INPUT_SIZE = 63  # px: the smallest side for which the three 3x3/2 max-pools still leave one pixel
FEATURE_LAYERS = ("conv5", "fc6", "fc7", "logits")
HEAD = "classifier.6"  # fc8's name in the state dict (torchvision's too): what fine-tuning replaces
HEAD_WEIGHT, CONV1_WEIGHT = f"{HEAD}.weight", "features.0.weight"  # the keys that tell a file's classes and arch
FREEZE = ("none", "features", "all-but-head")  # what fine-tuning may keep fixed


def is_head(name: str) -> bool:
    """Whether a parameter or state-dict key belongs to the head (fc8)."""
    return name.startswith(HEAD + ".")


class _AlexNetBase(nn.Module):
    """Shared forward pass and feature extraction. Subclasses build ``features`` and ``classifier``."""

    features: nn.Sequential
    avgpool: nn.AdaptiveAvgPool2d
    classifier: nn.Sequential
    # Index in ``classifier`` after which each named activation is available (post-ReLU for fc6/fc7).
    _classifier_taps: ClassVar[dict[str, int]] = {"fc6": 3, "fc7": 6, "logits": 7}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 256, 6, 6) at 224 px
        if x.shape[-2] * x.shape[-1] < POOL_CELLS and self._foldable():
            return self._small_map_forward(x)
        x = self.avgpool(x)  # (B, 256, 6, 6) whatever the input size
        x = torch.flatten(x, 1)  # (B, 9216)
        return self.classifier(x)  # (B, num_classes)

    def _foldable(self) -> bool:
        """Whether ``_small_map_forward`` may stand in for the pool and fc6: no dropout before fc6 in this mode (it
        would mask each copy separately), no hook on the modules it skips, and not being exported (an exported
        graph stays the plain modules; ``torch.compiler.is_exporting`` is missing before torch 2.5, where it is a
        larger graph of the same function)."""
        if self.training and self.classifier[0].p > 0:
            return False
        skipped = (self.avgpool, self.classifier[0], self.classifier[1])
        if any(m._forward_hooks or m._forward_pre_hooks for m in skipped):
            return False
        return not getattr(torch.compiler, "is_exporting", lambda: False)()

    def _small_map_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same function and gradients as ``forward`` for a conv5 map of fewer than 6x6 cells, ~1.1-1.4x faster.

        Below 6x6 the average pool only copies cells (at 64 px the one 1x1 cell 36 times), so fc6 multiplies 9,216
        inputs of which ``h*w*256`` differ: 58% of a 64-px image's multiply-adds. The pool is linear, ``fc6(P x) =
        (W P) x``: fold its matrix P into fc6's weight once per call and multiply the ``h*w*256`` cells directly;
        autograd carries the gradient back to every weight of W as the copies did. Training at 64 px on 2 CPU cores:
        350 -> 468 img/s in fp32, 477 -> 520 in bf16 (batch 128); evaluating, 2.1 -> 1.2 ms per image (fp32, batch
        256, AVX2), which is what a time budget's validations cost. ``_foldable`` says when.
        """
        _, c, h, w = x.shape
        cells = torch.eye(h * w, device=x.device, dtype=x.dtype).view(h * w, 1, h, w)
        pool = self.avgpool(cells).view(h * w, POOL_CELLS)  # row q: where input cell q lands in the 6x6 grid
        fc6 = self.classifier[1]
        if isinstance(fc6, SharedFc6):
            weight = fc6.cell_weight(pool)
        else:
            weight = fc6.weight.view(fc6.out_features, c, POOL_CELLS) @ pool.T.to(fc6.weight.dtype)  # (4096, c, h*w)
        x = nn.functional.linear(torch.flatten(x, 1), weight.reshape(fc6.out_features, c * h * w), fc6.bias)
        return self.classifier[2:](x)

    def extract(self, x: torch.Tensor, layer: str = "fc7") -> torch.Tensor:
        """Activations of a named layer, computed with the network's own modules (no copy).

        ``conv5``: the pooled conv5 maps, (B, 256, 6, 6); ``fc6`` / ``fc7``: the 4096-d hidden layers after their
        ReLU (the paper's Figure 4 uses fc7); ``logits``: the final scores. Dropout follows the module's mode, so
        call ``model.eval()`` first for deterministic features.
        """
        one_of(layer, "layer", FEATURE_LAYERS)
        self._check_input(x)
        x = self.avgpool(self.features(x))
        if layer == "conv5":
            return x
        x = torch.flatten(x, 1)
        return self.classifier[: self._classifier_taps[layer]](x)

    def _check_input(self, x: object) -> None:
        """Raise ``ArgumentError`` unless ``x`` is a float ``(B, C, H, W)`` batch this network takes (C: conv1's
        channels; H, W >= ``MIN_INPUT_SIZE``), saying what to pass instead."""
        c = self.features[0].in_channels
        want = f"a normalised float tensor (B, {c}, H, W), H and W at least {MIN_INPUT_SIZE} px"
        if not isinstance(x, torch.Tensor):
            module = type(x).__module__.partition(".")[0]
            kind = type(x).__name__ if module == "builtins" else f"{module}.{type(x).__name__}"
            hint = "; for image files, PIL images or arrays use alexnet.load(model_file).features(images)"
            raise ArgumentError(f"x must be {want}, got a {kind}{hint}")
        if not x.is_floating_point() or x.ndim != 4 or x.shape[1] != c or min(x.shape[-2:]) < MIN_INPUT_SIZE:
            dtype = str(x.dtype).removeprefix("torch.")
            raise ArgumentError(f"x must be {want}, got {dtype} {tuple(x.shape)}")

    @property
    def head(self) -> nn.Linear:
        """The last linear layer (fc8): what fine-tuning replaces."""
        return self.classifier[-1]

    def freeze(self, which: str) -> None:
        """Keep ``which`` fixed while training: ``none``, ``features`` (the conv layers) or ``all-but-head``."""
        if which not in FREEZE:
            raise ValueError(f"unknown freeze {which!r}; choose from {', '.join(FREEZE)}")
        for name, p in self.named_parameters():
            if (which == "features" and name.startswith("features.")) or (
                which == "all-but-head" and not is_head(name)
            ):
                p.requires_grad_(False)

    def share_fc6(self, image_size: int) -> bool:
        """Train fc6 as one block shared by the 36 copies of conv5's cell (``alexnet.shared_fc6``) when crops of
        ``image_size`` px leave conv5 one cell, nothing masks the copies apart (dropout) and fc6 trains: the same
        SGD trajectory, ~1.4x the steps per second at 64 px. Whether it did; ``state_dict`` stays plain fc6's."""
        return share_fc6(self.classifier, output_size(image_size) ** 2)

    def param_groups(self, head_lr_mult: float = 1.0, weight_decay: float = 0.0) -> list[dict]:
        """The trainable parameters as optimizer groups: the body (``lr_mult`` 1) and the head (``head_lr_mult``),
        each with ``weight_decay``; empty groups left out (nanoGPT's ``configure_optimizers``).

        With ``c`` < 3 input channels conv1's weight is a group of its own, ``lr_mult`` 3/c and weight decay x c/3:
        an RGB model fed a gray image (x, x, x) uses only the sum of its kernels over R, G, B, and each copy gets the
        same gradient, so that sum moves 3x as far per step; these follow its SGD trajectory exactly. A shared fc6
        block (``share_fc6``) stands for 36 copies: its group has lr x 1/36 and weight decay x 36, the same rule."""
        conv1, fc6 = self.features[0], self.classifier[1]
        own = conv1.in_channels < 3 and conv1.weight.requires_grad
        shared = isinstance(fc6, SharedFc6) and fc6.weight.requires_grad
        apart = {id(p) for p, alone in ((conv1.weight, own), (fc6.weight, shared)) if alone}  # in groups of their own
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        body = [p for n, p in trainable if not is_head(n) and id(p) not in apart]
        head = [p for n, p in trainable if is_head(n)]
        groups = [{"params": body, "lr_mult": 1.0, "weight_decay": weight_decay}]
        if own:
            c = conv1.in_channels
            groups.append({"params": [conv1.weight], "lr_mult": 3 / c, "weight_decay": weight_decay * c / 3})
        if shared:
            groups.append({"params": [fc6.weight], "lr_mult": 1 / POOL_CELLS,
                           "weight_decay": weight_decay * POOL_CELLS})  # fmt: skip
        groups.append({"params": head, "lr_mult": head_lr_mult, "weight_decay": weight_decay})
        return [g for g in groups if g["params"]]

    def reset_head(self, num_classes: int) -> None:
        """Replace fc8 with a freshly initialised layer for ``num_classes`` classes."""
        num_classes = positive_int(num_classes, "num_classes")
        old = self.head
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        self.classifier[-1] = new


def _classifier(num_classes: int, dropout: float, in_features: int = 256 * 6 * 6) -> nn.Sequential:
    num_classes = positive_int(num_classes, "num_classes")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise ArgumentError(f"dropout must be a probability from 0 to 1, got {dropout!r}")
    # Same order as torchvision (dropout before each hidden linear), so the state_dict indices match: 1, 4, 6.
    return nn.Sequential(
        nn.Dropout(p=dropout),
        nn.Linear(in_features, 4096),  # fc6
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(4096, 4096),  # fc7
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),  # fc8
    )


class AlexNet(_AlexNetBase):
    """torchvision's AlexNet: identical module tree, parameter names and shapes (61,100,840 params at 1000 classes).

    ``init``: ``"torchvision"`` keeps PyTorch's default layer init (what ``torchvision.models.alexnet()`` does);
    ``"kaiming"`` uses He-normal conv/linear weights and zero biases, which starts learning much sooner on small
    data without normalisation layers (see the ``fast`` recipe).
    """

    def __init__(
        self, num_classes: int = 1000, dropout: float = 0.5, init: str = "torchvision", in_channels: int = 3
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # in_channels: set by _apply_init
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = _classifier(num_classes, dropout)
        _apply_init(self, init, in_channels)


class AlexNet2012(_AlexNetBase):
    """The 2012 paper's AlexNet (paper §3, Figure 2), on one device.

    The paper's two GPUs become ``groups=2`` in the layers whose kernels only see their own GPU's maps (conv2, conv4,
    conv5); conv3 and the fully connected layers see both halves. 60,965,224 parameters at 1000 classes.

    Input size: the paper says 224 px, but 224 with conv1's 11x11/4 and no padding gives a 54x54 map, not the paper's
    55x55 (that needs 227). We pad conv1 by 2, as torchvision does, so 224 px gives the paper's 55-27-13-13-13-6 maps
    exactly; 227 px gives 56 after conv1 and then the same 27-13-13-13-6, so both sizes are correct and the classifier
    always sees 256x6x6.
    """

    def __init__(
        self, num_classes: int = 1000, dropout: float = 0.5, init: str = "paper", in_channels: int = 3
    ) -> None:
        super().__init__()

        # paper §3.3: LRN with k=2, n=5, α=1e-4, β=0.75. nn.LocalResponseNorm divides alpha by size, so α·n = 5e-4.
        def lrn() -> nn.LocalResponseNorm:
            return nn.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2.0)

        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=11, stride=4, padding=2),  # conv1 -> (B, 96, 55, 55); see _apply_init
            nn.ReLU(inplace=True),
            lrn(),
            nn.MaxPool2d(kernel_size=3, stride=2),  # paper §3.4: overlapping pooling, z=3, s=2 -> 27x27
            nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2),  # conv2 -> (B, 256, 27, 27)
            nn.ReLU(inplace=True),
            lrn(),
            nn.MaxPool2d(kernel_size=3, stride=2),  # -> 13x13
            nn.Conv2d(256, 384, kernel_size=3, padding=1),  # conv3: connected to both halves
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2),  # conv4
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2),  # conv5
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # -> (B, 256, 6, 6)
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = _classifier(num_classes, dropout)
        _apply_init(self, init, in_channels)


# ----------------------------------------------------------------------------------------------------------------
# initialisation


def _layers(model: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def paper_init_(model: nn.Module) -> None:
    """paper §5: weights ~ N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden fc layers, 0 elsewhere."""
    layers = _layers(model)  # conv1..conv5, fc6, fc7, fc8
    ones = {1, 3, 4, 5, 6}  # conv2, conv4, conv5, fc6, fc7 ("initialize the neuron biases ... with the constant 1")
    for i, m in enumerate(layers):
        nn.init.normal_(m.weight, mean=0.0, std=0.01)
        nn.init.constant_(m.bias, 1.0 if i in ones else 0.0)


def kaiming_init_(model: nn.Module) -> None:
    """He-normal (fan-out for convs, fan-in for linears) weights and zero biases; the last layer gets std 0.01."""
    layers = _layers(model)
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        else:
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(m.bias)
    nn.init.normal_(layers[-1].weight, std=0.01)


_INITS: dict[str, Callable[[nn.Module], None] | None] = {
    "torchvision": None,  # keep PyTorch's default init, as torchvision does
    "paper": paper_init_,
    "kaiming": kaiming_init_,
}


def _apply_init(model: nn.Module, init: str, in_channels: int = 3) -> None:
    """``init`` on a model built with an RGB conv1; for ``in_channels`` 1, conv1 is then that RGB conv1 summed over
    R, G, B (``adapt_input_conv``), so a gray model starts as the RGB model fed (x, x, x) does, the same random draws
    included (He-normal's fan-out and the paper's N(0, 0.01) would otherwise start its kernels sqrt(3) x smaller)."""
    one_of(init, "init", tuple(_INITS))
    if isinstance(in_channels, bool) or in_channels not in (1, 3):
        raise ArgumentError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")
    fn = _INITS[init]
    if fn is not None:
        fn(model)
    rgb = model.features[0]
    if in_channels != rgb.in_channels:
        conv1 = nn.utils.skip_init(nn.Conv2d, in_channels, rgb.out_channels, rgb.kernel_size, rgb.stride, rgb.padding)
        with torch.no_grad():  # skip_init: no random draws, so the rest of the run's random stream stays the RGB run's
            conv1.weight.copy_(adapt_input_conv(rgb.weight, in_channels))
            conv1.bias.copy_(rgb.bias)
        model.features[0] = conv1


# ----------------------------------------------------------------------------------------------------------------
# registry

_MODELS: dict[str, type[_AlexNetBase]] = {"alexnet": AlexNet, "alexnet2012": AlexNet2012}


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int = 1000, **kwargs) -> _AlexNetBase:
    """Build a model by registry name (``alexnet`` or ``alexnet2012``); extra kwargs go to its constructor."""
    one_of(name, "name", list_models())
    return _MODELS[name](num_classes=num_classes, **kwargs)


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """conv1's RGB kernels ``(out, 3, k, k)`` for a model of ``in_channels`` inputs, as timm's ``adapt_input_conv``:
    1 channel sums them over R, G, B (a gray image x gives the response the RGB image (x, x, x) gave); 3 is as is."""
    if weight.shape[1] == in_channels:
        return weight
    if in_channels == 1 and weight.shape[1] == 3:
        return weight.sum(dim=1, keepdim=True)
    raise ValueError(f"cannot adapt conv1 of {weight.shape[1]} input channels to {in_channels}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def output_size(size: int) -> int:
    """Spatial size after ``features`` for an input side of ``size`` px (both architectures)."""
    s = math.floor((size + 2 * 2 - 11) / 4) + 1
    for _ in range(3):  # three 3x3/2 max-pools; the convs in between keep the size
        s = (s - 3) // 2 + 1
    return s
