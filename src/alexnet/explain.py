"""Where the network looks: attribution maps for one class, and the units' strongest patches.

Four methods, each giving one ``(c, c)`` map per crop (``c``: the crop the network sees), higher = more evidence
for the target class:

- ``gradcam``: Grad-CAM (Selvaraju et al. 2017) at a conv layer: the layer's ReLU'd maps weighted by the spatial
  mean of the target logit's gradient, summed over channels, ReLU'd, and upsampled bilinearly to the crop. The map
  is only as fine as the layer: at 224 px conv5 is 13x13 (conv3/4 too), at 64 px conv3-5 are 3x3 and conv2 7x7
  (``layer_size``). Written here (no Captum needed, so ``alexnet plot`` draws it) and tested against Captum's
  ``LayerGradCam``.
- ``occlusion``: Zeiler & Fergus (2014) by Captum's ``Occlusion``: how much the target logit drops when a
  ``window`` x ``window`` px square is replaced by the mean colour (0 after normalisation), slid by ``stride`` px,
  averaged where windows overlap. Default window c/4 and stride c/8 (56 and 28 px at 224: 49 forward passes).
  Signed: negative where hiding a region raises the score.
- ``saliency``: Simonyan et al. (2014) by Captum's ``Saliency``: the largest absolute gradient of the target logit
  over the three colour channels of each pixel.
- ``integrated-gradients``: Sundararajan et al. (2017) by Captum's ``IntegratedGradients``: gradients averaged along
  the straight path from a black image to the crop (``steps`` points, Gauss-Legendre), times the difference;
  the map is the absolute value of the sum over colour channels.

The target is a class index; ``None`` means each crop's own top-1 prediction. The network runs in fp32 and eval
mode; nothing about the model is changed (no ``.grad`` is written).

Whether a map means anything is measured in ``alexnet.explain_checks``. ``top_patches`` gives the paper-era unit view
(Zeiler & Fergus 2014, Fig. 2): the crops that drive one conv unit hardest, cut to its receptive field.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .arguments import positive_int
from .errors import ArgumentError, UserError
from .names import MAX_EXPLAIN_STEPS
from .preprocess import Preprocess

METHODS = ("gradcam", "occlusion", "saliency", "integrated-gradients")
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
DEFAULT_LAYER = "auto"  # Grad-CAM's layer: ``default_layer``
MIN_CAM_SIDE = 7  # positions across the map Grad-CAM's default layer must have (conv5 from 127-px crops, 13 at 224)
DEFAULT_STEPS = 32  # integrated gradients: path points (Captum's default is 50; 32 keeps 224 px under 2 s on 2 cores)


@dataclass(frozen=True)
class Explanation:
    """One crop's attribution map, with what the network predicted and which class the map is for."""

    map: torch.Tensor  # float32 (c, c) on the CPU, same pixel grid as ``crop``
    crop: torch.Tensor  # uint8 (3, c, c): what the network saw
    method: str
    layer: str | None  # the conv layer for gradcam, else None
    target: str
    target_index: int
    target_probability: float
    predicted: str
    predicted_index: int
    probability: float  # of the predicted class


# ----------------------------------------------------------------------------------------------------------------
# layers


def conv_layer(model: nn.Module, layer: str) -> nn.Module:
    """The module whose output is ``layer``'s rectified maps: the ReLU after the n-th conv of ``model.features``."""
    if layer not in LAYERS:
        raise ArgumentError(f"layer {layer!r}: choose one of {', '.join(LAYERS)}")
    mods = list(model.features)
    convs = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)]
    i = convs[LAYERS.index(layer)]
    return mods[i + 1] if i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU) else mods[i]


def default_layer(model: nn.Module, crop: int) -> str:
    """Grad-CAM's layer when none is named: the deepest conv layer whose maps are at least ``MIN_CAM_SIDE`` positions
    across for ``crop`` px inputs. Conv5, the Grad-CAM paper's choice, from 127-px crops (13x13 at 224); at 64 px,
    where conv3-5 are 3x3 and each position sees the whole crop, conv2 (7x7). On the 64-px demo model conv2's maps
    found off-centre objects 48% of the time against conv5's 17% (random point 20%; benchmarks/explain.md)."""
    for layer in reversed(LAYERS):
        if layer_size(model, layer, crop) >= MIN_CAM_SIDE:
            return layer
    return LAYERS[0]


def resolve_layer(model: nn.Module, layer: str | None, crop: int) -> str:
    """``layer`` checked, or ``default_layer`` for ``None`` / ``"auto"``."""
    if layer is None or layer == "auto":
        return default_layer(model, crop)
    if layer not in LAYERS:
        raise ArgumentError(f"layer {layer!r}: choose auto or one of {', '.join(LAYERS)}")
    return layer


def layer_size(model: nn.Module, layer: str, crop: int) -> int:
    """Side in px of ``layer``'s maps for a ``crop`` px input (what Grad-CAM's map is upsampled from)."""
    return len(receptive_fields(model, layer, crop)[0])


def receptive_fields(
    model: nn.Module, layer: str, crop: int, *, clip: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position along one axis of ``layer``'s maps, the first and last input px it sees (inclusive; clipped to
    the ``crop`` px input unless ``clip`` is False): ``(first, last)``, each ``(n,)``. Square kernels and inputs, so
    both axes agree. AlexNet's conv5 sees 163 px: at 224 px a patch of the crop, at 64 px all of it."""
    target = conv_layer(model, layer)
    mods = []
    for m in model.features:
        mods.append(m)
        if m is target:
            break
    n = crop
    geometry = []  # (kernel, stride, padding) of each layer that changes the grid
    for m in mods:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (_first(getattr(m, a)) for a in ("kernel_size", "stride", "padding"))
            geometry.append((k, s, p))
            n = (n + 2 * p - k) // s + 1
    first, last = torch.arange(n), torch.arange(n)
    for k, s, p in reversed(geometry):  # an output range [a, b] sees inputs [a*s - p, b*s - p + k - 1]
        first, last = first * s - p, last * s - p + k - 1
    return (first.clamp(0, crop - 1), last.clamp(0, crop - 1)) if clip else (first, last)


def _first(v: int | Sequence[int]) -> int:
    return v if isinstance(v, int) else v[0]


# ----------------------------------------------------------------------------------------------------------------
# the methods


def occlusion_geometry(size: int, window: int | None, stride: int | None) -> tuple[int, int]:
    """Occlusion's (window, stride) in px on a ``size``-px crop: a quarter of the crop and half the window when None;
    ``ArgumentError`` unless whole numbers with 1 <= stride <= window <= size (0 is refused, as ``--window 0``)."""
    window = max(1, size // 4) if window is None else positive_int(window, "window")
    stride = max(1, window // 2) if stride is None else positive_int(stride, "stride")
    if not stride <= window <= size:
        raise ArgumentError(f"window {window} / stride {stride}: need 1 <= stride <= window <= {size} px")
    return window, stride


def check_steps(steps: int) -> int:
    """Integrated gradients' path points: a whole number from 1 to ``MAX_EXPLAIN_STEPS`` (each is a forward and a
    backward pass per image, so a huge count is hours)."""
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool) and steps < 1:
        raise ArgumentError(f"steps {steps}: integrated gradients needs at least 1 step")
    return positive_int(steps, "steps", most=MAX_EXPLAIN_STEPS)


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    method: str = "gradcam",
    layer: str | None = DEFAULT_LAYER,
    window: int | None = None,
    stride: int | None = None,
    steps: int = DEFAULT_STEPS,
    baseline: torch.Tensor | None = None,
) -> torch.Tensor:
    """Maps ``(B, H, W)`` float32 for normalised inputs ``x`` ``(B, 3, H, W)`` and class indices ``targets`` ``(B,)``.

    ``layer``: Grad-CAM's conv layer (``auto``: ``default_layer``). ``window`` / ``stride``: occlusion square and
    step in px (default H/4, H/8). ``steps``: integrated-gradients path points. ``baseline``: integrated gradients'
    start, normalised ``(3, H, W)`` (default: black). ``model`` must be in eval mode (dropout would make every map
    random).
    """
    if method not in METHODS:
        raise ArgumentError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    if model.training:
        raise ValueError("attribute needs the model in eval mode (call model.eval())")
    targets = targets.to(x.device)
    x = x.detach().float().requires_grad_(method in ("saliency", "integrated-gradients"))
    if method == "gradcam":
        return gradcam(model, x, targets, layer)
    captum = _captum()
    if method == "occlusion":
        window, stride = occlusion_geometry(x.shape[-1], window, stride)
        per_eval = max(1, 64 // len(x))  # perturbed copies per forward pass: (B x per_eval) crops at a time
        attr = captum.Occlusion(model).attribute(
            x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride), baselines=0.0,
            target=targets, perturbations_per_eval=per_eval,
        )  # fmt: skip
        return attr.mean(1).detach()  # the same score drop in all three channels
    if method == "saliency":
        return captum.Saliency(model).attribute(x, target=targets, abs=True).amax(1).detach()
    steps = check_steps(steps)
    if baseline is None:
        baseline = torch.zeros_like(x)  # black, before normalisation; callers pass the normalised black
    per_pass = max(len(x), min(len(x) * steps, 128))  # (image, step) pairs per forward pass: bounds the memory
    attr = captum.IntegratedGradients(model).attribute(
        x, baselines=baseline.expand_as(x), target=targets, n_steps=steps, internal_batch_size=per_pass
    )
    return attr.sum(1).abs().detach()


def gradcam(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layer: str | None = DEFAULT_LAYER
) -> torch.Tensor:
    """Grad-CAM maps ``(B, H, W)``: Selvaraju et al. 2017, eq. 1 (channel weights = spatial mean of the target
    logit's gradient) and eq. 2 (ReLU of the weighted sum of the layer's maps), bilinearly upsampled to the input.
    ``layer``: a conv layer, or ``auto`` (``default_layer`` for this input size)."""
    module = conv_layer(model, resolve_layer(model, layer, x.shape[-1]))
    saved: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: saved.append(out))
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # a graph even when every parameter is frozen
            logits = model(x)  # (B, classes)
            acts = saved[0]  # (B, K, h, w)
            # the batch's target logits summed: each image's gradient is its own (no batch-coupled layers)
            (grads,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), acts)
    finally:
        handle.remove()
    weights = grads.mean((2, 3), keepdim=True)  # (B, K, 1, 1): alpha_k, eq. 1
    cam = (weights * acts).sum(1, keepdim=True).clamp_min(0).detach()  # (B, 1, h, w): eq. 2
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def _captum():
    try:
        import captum.attr
    except ImportError:
        raise UserError(
            "occlusion, saliency and integrated gradients need Captum: pip install 'alexnet[explain]'"
        ) from None
    return captum.attr


# ----------------------------------------------------------------------------------------------------------------
# explaining crops with a model and its class names


def resolve_target(target: str | int | None, classes: Sequence[str]) -> int | None:
    """``None`` / ``"top1"`` -> None (each image's prediction); a class name or an index (an int, or its digits as
    the CLI and serve pass it) -> the index. ``ArgumentError`` for anything else: a float such as 1.5 is not an
    index (it was truncated to class 1), nor is True."""
    if target is None or target == "top1":
        return None
    if isinstance(target, str) and target in classes:
        return list(classes).index(target)
    whole = isinstance(target, numbers.Integral) and not isinstance(target, bool)
    digits = isinstance(target, str) and target.strip().isdecimal()
    if (whole or digits) and 0 <= int(target) < len(classes):
        return int(target)
    few = ", ".join(list(classes)[:10]) + (", ..." if len(classes) > 10 else "")
    raise ArgumentError(f"target {target!r}: not top1, a class name ({few}) or an index 0..{len(classes) - 1}")


def check_arguments(
    model: nn.Module, crop: int, classes: Sequence[str], method: str, target: str | int | None, layer: str | None,
    window: int | None, stride: int | None, steps: int,
) -> tuple[str, int | None]:  # fmt: skip
    """``explain_crops``'s arguments checked before any work (``ArgumentError`` naming the first wrong one): the
    conv layer (``resolve_layer``) and the target index (``resolve_target``; None: each image's prediction)."""
    if method not in METHODS:
        raise ArgumentError(f"method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "occlusion":
        occlusion_geometry(crop, window, stride)
    if method == "integrated-gradients":
        check_steps(steps)
    return resolve_layer(model, layer, crop), resolve_target(target, classes)


def explain_crops(
    model: nn.Module,
    crops: torch.Tensor,
    *,
    preprocess: Preprocess,
    classes: Sequence[str],
    method: str = "gradcam",
    target: str | int | None = "top1",
    layer: str | None = DEFAULT_LAYER,
    window: int | None = None,
    stride: int | None = None,
    steps: int = DEFAULT_STEPS,
    device: torch.device | str = "cpu",
) -> list[Explanation]:
    """One ``Explanation`` per ``uint8 (B, 3, c, c)`` crop, for ``target`` (see ``resolve_target``)."""
    layer, fixed = check_arguments(model, crops.shape[-1], classes, method, target, layer, window, stride, steps)
    x = preprocess.normalize(crops.to(device))  # float32 (B, 3, c, c)
    with torch.no_grad():
        probs = model(x).float().softmax(-1)  # (B, classes)
    predicted = probs.argmax(1)
    targets = predicted if fixed is None else torch.full_like(predicted, fixed)
    black = preprocess.normalize(torch.zeros(preprocess.channels, 1, 1, dtype=torch.uint8, device=x.device))
    black = black.expand(x.shape[1:])
    maps = attribute(
        model, x, targets, method=method, layer=layer, window=window, stride=stride, steps=steps, baseline=black
    )
    maps, probs, predicted, targets = maps.float().cpu(), probs.cpu(), predicted.tolist(), targets.tolist()
    out = []
    for i, (p, t) in enumerate(zip(predicted, targets)):
        e = Explanation(map=maps[i], crop=crops[i].cpu(), method=method, layer=layer if method == "gradcam" else None,
                        target=classes[t], target_index=t, target_probability=float(probs[i, t]),
                        predicted=classes[p], predicted_index=p, probability=float(probs[i, p]))  # fmt: skip
        out.append(e)
    return out


# ----------------------------------------------------------------------------------------------------------------
# the paper-era unit view


@dataclass(frozen=True)
class Patch:
    """One of a unit's strongest activations: val image ``index``, its value, and the receptive field in the crop."""

    index: int
    activation: float
    position: tuple[int, int]  # (row, col) in the layer's map
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) in crop px, ends exclusive


def layer_activations(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """``layer``'s rectified maps ``(B, K, h, w)`` for normalised inputs ``x`` (no gradient)."""
    module = conv_layer(model, layer)
    saved: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: saved.append(out.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return saved[0]


@dataclass(frozen=True)
class UnitMaxima:
    """Each unit's largest activation in each crop, and where: what ``top_patches`` ranks."""

    values: torch.Tensor  # float32 (N, K): unit k's largest activation in crop n
    positions: torch.Tensor  # int64 (N, K): where, as a flat index into the layer's (side x side) map
    side: int  # the layer's map size
    first: torch.Tensor  # (side,): first input px each map position sees (receptive_fields)
    last: torch.Tensor  # (side,): last input px, inclusive
    field: int  # px: the receptive field's side before clipping to the crop


def unit_maxima(
    model: nn.Module, crops: torch.Tensor, preprocess: Preprocess, layer: str = "conv5", *, batch_size: int = 64
) -> UnitMaxima:
    """Every unit's maximum over the positions of ``layer``'s rectified maps, for ``uint8 (N, 3, c, c)`` crops."""
    device = next(model.parameters()).device
    values, positions = [], []
    for start in range(0, len(crops), batch_size):
        x = preprocess.normalize(crops[start : start + batch_size].to(device))
        acts = layer_activations(model, x, layer).float()  # (b, K, side, side)
        v, pos = acts.flatten(2).max(2)  # (b, K) each
        values.append(v.cpu())
        positions.append(pos.cpu())
    first, last = receptive_fields(model, layer, crops.shape[-1])
    lo, hi = receptive_fields(model, layer, crops.shape[-1], clip=False)
    return UnitMaxima(torch.cat(values), torch.cat(positions), len(first), first, last, int(hi[0] - lo[0] + 1))


def top_patches(maxima: UnitMaxima, units: Sequence[int], *, per_unit: int = 9) -> dict[int, list[Patch]]:
    """For each unit, the ``per_unit`` crops where its largest activation is largest, strongest first, each with
    the receptive field of that maximum (Zeiler & Fergus 2014, Fig. 2: "the top 9 activations", here as the image
    patches that produced them)."""
    out: dict[int, list[Patch]] = {}
    for unit in units:
        values = maxima.values[:, unit]
        patches = []
        for i in values.topk(min(per_unit, len(values))).indices.tolist():
            r, c = divmod(int(maxima.positions[i, unit]), maxima.side)
            box = (int(maxima.first[c]), int(maxima.first[r]), int(maxima.last[c]) + 1, int(maxima.last[r]) + 1)
            patches.append(Patch(index=i, activation=float(values[i]), position=(r, c), box=box))
        out[unit] = patches
    return out
