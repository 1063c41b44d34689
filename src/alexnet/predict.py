"""Using a trained model: ``alexnet.load(path)`` gives a ``Predictor`` that classifies images and extracts features.

The preprocessing (a ``Preprocess``: resize, crop, mean, std) comes from the model file, so callers never retype it::

    >>> import alexnet
    >>> p = alexnet.load("run/checkpoints/best.pt")
    >>> p.predict(["cat.jpg", "dog.png"], topk=3)
    [[('cat', 0.91), ('dog', 0.05), ('fox', 0.01)], [...]]

``alexnet.load("model.onnx")`` gives an ``OnnxPredictor`` (onnxruntime) with the same ``predict``, ``iter_predict``
and ``probabilities``. Inputs may be file paths, PIL images, numpy ``(H, W, 3)`` / ``(H, W)`` uint8 arrays (a gray
``(H, W)`` or PIL image over 8 bits is windowed as its file would be), or
``(3, H, W)`` / ``(B, 3, H, W)`` tensors (uint8 0..255, or float 0..1 before normalisation: other floats are refused;
see ``alexnet.inputs``). Decoding and cropping run per image on the CPU; the network runs on whole batches on the
device.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from . import checkpoint
from .arguments import file_path, flag, one_of, positive_int
from .checkpoint import Checkpoint
from .device import autocast, resolve_device, resolve_precision
from .errors import ArgumentError, UserError, missing_file
from .inputs import as_uint8_images
from .model import FEATURE_LAYERS
from .outputs import atomic_file
from .preprocess import IMAGENET, Preprocess, match_channels

if TYPE_CHECKING:
    from .explain import Explanation

Prediction = list[tuple[str, float]]  # top-k (class name, probability), most likely first
DEFAULT_TOPK = 5  # without topk: the top 5, or every class of a model with fewer (as serve's ?topk)


def load(model_path: str | os.PathLike, *, device: str = "auto", precision: str = "fp32") -> Predictor:
    """Load any supported model file into a predictor.

    Weights (our checkpoint, torchvision ``.pth``, ``.safetensors`` + sidecar) give a ``Predictor`` running PyTorch
    on ``device`` in ``precision`` (fp32, or autocast bf16 / fp16 / auto: see ``alexnet.device``). An ``.onnx``
    export (``alexnet export``) gives an ``OnnxPredictor`` running onnxruntime, with the same methods except
    ``features``. A ``.pt2`` archive is refused in one line (``torch.export.load`` can run code from the file).
    """
    suffix = Path(file_path(model_path, "model_path")).suffix.lower()
    if not Path(model_path).is_file():
        raise UserError(missing_file(model_path, "model file"))
    if suffix == ".onnx":
        return OnnxPredictor(model_path, device=device, precision=precision)
    from .weights import model_from_file

    model, info = model_from_file(model_path)
    return Predictor(model, info, device=resolve_device(device), precision=precision)


# ----------------------------------------------------------------------------------------------------------------
# the predictor


class Predictor:
    """A model in eval mode plus its class names and ``Preprocess``; batches images through it.

    ``probabilities(crops)`` is the one place where crops become class probabilities (normalisation, autocast,
    ten-crop averaging); ``predict``, ``iter_predict``, ``evaluate`` and the plots go through it.
    """

    def __init__(
        self,
        model: nn.Module,
        info: Checkpoint,
        *,
        device: torch.device | None = None,
        precision: str = "fp32",
    ) -> None:
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device).eval()
        self._set_info(info)
        self.dtype = resolve_precision(precision, self.device)  # torch.float32: no autocast

    def _set_info(self, info: Checkpoint) -> None:
        self.info = info  # arch, classes, preprocess and the run's settings, as the model file gave them
        self.classes: list[str] = list(info.classes or [])
        self.preprocess: Preprocess = info.preprocess or IMAGENET
        self._transforms = {False: self.preprocess.transform(), True: self.preprocess.transform(ten_crop=True)}

    def transform(self, img: torch.Tensor, *, ten_crop: bool = False) -> torch.Tensor:
        """``uint8 (3, H, W)`` -> ``uint8 (C, crop, crop)``, or ``(10, C, crop, crop)`` with ``ten_crop`` (C: the
        model's channels; RGB becomes luma for a grayscale model)."""
        return self._transforms[ten_crop](match_channels(img, self.preprocess.channels))

    def __repr__(self) -> str:
        k, arch = len(self.classes), getattr(self.info, "arch", None)
        return f"{type(self).__name__}(arch={arch!r}, {k} classes, {self.preprocess!r}, device={str(self.device)!r})"

    def top_k(self, topk: int | None, name: str = "topk") -> int:
        """``topk`` checked against this model's classes: 1 to their count (more is refused, as serve's ``?topk``
        answers 400: a caller asking for more may have the wrong model); None: ``DEFAULT_TOPK`` or every class."""
        n = len(self.classes)
        if topk is None:
            return min(DEFAULT_TOPK, n)
        return positive_int(topk, name, most=n, what=f"this model has {n} class{'es' * (n != 1)}")

    def _forward(self, batch: torch.Tensor, layer: str = "logits") -> torch.Tensor:
        """``uint8 (B, 3, c, c)`` on the CPU -> float32 activations of ``layer`` on the device."""
        x = self.preprocess.normalize(batch.to(self.device, non_blocking=True))  # float32 (B, 3, c, c)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            out = self.model(x) if layer == "logits" else self.model.extract(x, layer)
        return out.float()

    def probabilities(self, crops: Any, *, ten_crop: bool = False) -> torch.Tensor:
        """Class probabilities: float32 softmax ``(N, num_classes)`` on ``self.device``.

        ``crops``: a tensor is taken as preprocessed crops, ``uint8 (B, 3, c, c)`` or ten-crop ``(B, 10, 3, c, c)``
        (``transform`` makes them; anything else is a ``UserError`` saying so); anything else is one image or a
        list of images as ``predict`` takes them (paths, PIL images, numpy arrays), decoded and cropped here
        (``ten_crop`` for the ten views). Ten-crop averages the ten softmax outputs (paper §4.1: "averaging the
        predictions ... on the ten patches").
        """
        if not isinstance(crops, torch.Tensor):
            flag(ten_crop, "ten_crop")
            images = crops if isinstance(crops, (list, tuple)) else [crops]
            if not images:
                raise UserError("probabilities: no images given")
            crops = torch.stack([self.transform(img, ten_crop=ten_crop) for src in images
                                 for img in as_uint8_images(src, self.preprocess)])  # fmt: skip
        c, k = self.preprocess.crop, self.preprocess.channels
        if crops.dtype != torch.uint8 or crops.ndim not in (4, 5) or tuple(crops.shape[-3:]) != (k, c, c):
            raise UserError(
                f"probabilities: a tensor is taken as crops, uint8 (B, {k}, {c}, {c}) or (B, 10, {k}, {c}, {c}), not "
                f"{str(crops.dtype).removeprefix('torch.')} {tuple(crops.shape)}; pass images in a list (paths, PIL "
                "images, arrays or tensors) to have them decoded and cropped"
            )
        if crops.ndim == 5:
            b, n = crops.shape[:2]
            return self._forward(crops.flatten(0, 1)).softmax(-1).view(b, n, -1).mean(1)
        return self._forward(crops).softmax(-1)

    def iter_predict(
        self,
        images: Iterable[Any],
        *,
        topk: int | None = None,
        ten_crop: bool = False,
        batch_size: int = 64,
        flip: bool = False,
    ) -> Iterator[tuple[Any, Prediction | None, UserError | None]]:
        """Yield ``(input, top-k, None)`` or ``(input, None, error)`` per image, in order; bad inputs don't stop it.
        ``topk``: 1 to the model's classes (``top_k``); ``flip``: average each image's softmax with its mirror's
        (ignored with ``ten_crop``, whose views hold it).

        A ``(B, 3, H, W)`` tensor input yields B results, each paired with the whole tensor as its input. A
        ``UserError`` instance among the inputs (e.g. from a folder scan) comes back as that input's error, in order.
        """
        k, batch_size = self.top_k(topk), positive_int(batch_size, "batch_size")
        flag(ten_crop, "ten_crop")
        flag(flip, "flip")
        pending: list[tuple[Any, torch.Tensor | None, UserError | None]] = []

        def flush() -> Iterator[tuple[Any, Prediction | None, UserError | None]]:
            good = [c for _, c, _ in pending if c is not None]
            results: list[Prediction] = []
            if good:
                probs, idx = self.probabilities(torch.stack(good)).topk(k, dim=-1)
                probs, idx = probs.cpu().tolist(), idx.cpu().tolist()  # one device->host copy per batch
                results = [[(self.classes[i], p) for i, p in zip(ii, pp)] for ii, pp in zip(idx, probs)]
            it = iter(results)
            for src, crop, err in pending:
                yield (src, None, err) if crop is None else (src, next(it), None)
            pending.clear()

        for image in images:
            try:
                if isinstance(image, UserError):
                    raise image
                decoded = as_uint8_images(image, self.preprocess)
                crops = [self.transform(img, ten_crop=ten_crop) for img in decoded]
                if flip and not ten_crop:  # (2, C, c, c): the image and its mirror, averaged as views
                    crops = [torch.stack((c, c.flip(-1))) for c in crops]
            except UserError as e:
                pending.append((image, None, e))
            else:
                pending.extend((image, c, None) for c in crops)
            if len(pending) >= batch_size:
                yield from flush()
        yield from flush()

    def predict(
        self, images: Any, *, topk: int | None = None, ten_crop: bool = False, batch_size: int = 64, flip: bool = False
    ) -> list[Prediction]:
        """Top-k ``(class name, probability)`` per image. ``images``: one image or a list (see module docstring).

        Raises ``UserError`` naming the first input that cannot be read.
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        out = []
        for _, result, err in self.iter_predict(images, topk=topk, ten_crop=ten_crop, batch_size=batch_size, flip=flip):
            if err is not None:
                raise err
            out.append(result)
        return out

    def features(self, images: Sequence[Any] | Any, *, layer: str = "fc7", batch_size: int = 64) -> torch.Tensor:
        """Activations of ``layer`` (conv5 ``(N, 256, 6, 6)``, fc6/fc7 ``(N, 4096)``) for the centre crops, on CPU.

        ``images``: a list of inputs as for ``predict``, or a data split (anything with ``len`` and ``load(i)``).
        """
        one_of(layer, "layer", FEATURE_LAYERS)
        batch_size = positive_int(batch_size, "batch_size")
        self._check_features()
        if hasattr(images, "load") and hasattr(images, "__len__"):
            loader = images.load
            n = len(images)
        else:
            if not isinstance(images, (list, tuple)):
                images = [images]
            flat = [img for src in images for img in as_uint8_images(src, self.preprocess)]
            loader, n = flat.__getitem__, len(flat)
        out = []
        for start in range(0, n, batch_size):
            crops = torch.stack([self.transform(loader(i)) for i in range(start, min(start + batch_size, n))])
            out.append(self._forward(crops, layer).float().cpu())
        if not out:
            raise UserError("no images to extract features from")
        return torch.cat(out)

    def explain(
        self,
        images: Any,
        *,
        method: str = "gradcam",
        target: str | int | None = "top1",
        layer: str | None = "auto",
        window: int | None = None,
        stride: int | None = None,
        steps: int = 32,
        batch_size: int = 16,
    ) -> list[Explanation]:
        """Attribution maps for the centre crops: one ``alexnet.explain.Explanation`` (``map`` float32 ``(c, c)``,
        ``crop``, predicted and target class) per image. ``images``: one image or a list (see module docstring).

        ``method``: gradcam, occlusion, saliency or integrated-gradients (see ``alexnet.explain``); ``target``:
        ``"top1"`` (each image's prediction), a class name or index. ``layer``: Grad-CAM's conv layer (conv1..conv5,
        or auto: ``alexnet.explain.default_layer``). ``window`` / ``stride``: occlusion's square and step in px;
        ``steps``: integrated gradients' path points. Runs in fp32 whatever ``precision`` says. Not available for
        ``.onnx`` exports (no gradients).
        """
        if self.model is None:
            raise UserError(
                f"{getattr(self, 'path', 'this model')}: explain needs gradients, which an .onnx export does not have; "
                "use the checkpoint the export was made from"
            )
        from .explain import check_arguments, explain_crops

        batch_size = positive_int(batch_size, "batch_size")  # and the others before any image is decoded:
        check_arguments(self.model, self.preprocess.crop, self.classes, method, target, layer, window, stride, steps)
        if not isinstance(images, (list, tuple)):
            images = [images]
        crops = [self.transform(img) for src in images for img in as_uint8_images(src, self.preprocess)]
        if not crops:
            raise UserError("no images to explain")
        out = []
        for start in range(0, len(crops), batch_size):
            batch = torch.stack(crops[start : start + batch_size])
            out += explain_crops(
                self.model, batch, preprocess=self.preprocess, classes=self.classes, method=method, target=target,
                layer=layer, window=window, stride=stride, steps=steps, device=self.device,
            )  # fmt: skip
        return out

    def _check_features(self) -> None:
        """Raise ``UserError`` when this predictor has only the logits (an export)."""


# ----------------------------------------------------------------------------------------------------------------
# ONNX exports, run by onnxruntime


class OnnxPredictor(Predictor):
    """An ``alexnet export --format onnx`` file run by onnxruntime: class names and ``Preprocess`` come from its
    ``metadata_props``. Same ``predict`` / ``iter_predict`` / ``probabilities`` / ``transform`` as ``Predictor``;
    ``features`` needs the checkpoint (the export has only the logits). Runs in fp32 on the CPU, or on CUDA when
    onnxruntime-gpu is installed and ``device`` asks for it.
    """

    def __init__(self, path: str | os.PathLike, *, device: str = "auto", precision: str = "fp32") -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError(f"{path}: running an ONNX model needs onnxruntime: pip install 'alexnet[onnx]'") from None
        if precision not in ("auto", "fp32"):
            raise ArgumentError(f"precision {precision!r}: an ONNX export runs in fp32 (use auto or fp32)")
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{path}: no such ONNX file")
        providers: list[Any] = ["CPUExecutionProvider"]
        gpu = "CUDAExecutionProvider" in ort.get_available_providers()
        if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise ArgumentError(f"device {device!r}: an ONNX model runs on auto, cpu, cuda or cuda:N")
        if device.startswith("cuda") and not gpu:
            raise UserError(f"device {device!r}: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
        if gpu and device != "cpu":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)}))
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings about unused initialisers on every load
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{path}: onnxruntime cannot read this file ({first})") from None
        self.model = None
        self.device = torch.device("cpu")  # outputs come back as CPU tensors, whatever ran them
        self.dtype = torch.float32
        self._set_info(onnx_metadata(self.session, path))
        self._input = self.session.get_inputs()[0]
        shape = self._input.shape  # [batch, 3, crop, crop]; batch is a name (dynamic axis)
        crop = self.preprocess.crop
        channels = self.preprocess.channels
        if len(shape) != 4 or shape[1] != channels or (isinstance(shape[2], int) and shape[2:] != [crop, crop]):
            raise UserError(f"{path}: input shape {shape} does not match the stored preprocessing (crop {crop} px)")
        outputs = self.session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != len(self.classes):
            raise UserError(f"{path}: {outputs[-1]} outputs but {len(self.classes)} class names in its metadata")

    def _forward(self, batch: torch.Tensor, layer: str = "logits") -> torch.Tensor:
        """``uint8 (B, 3, c, c)`` -> float32 logits ``(B, num_classes)`` on the CPU."""
        if layer != "logits":
            self._check_features()
        x = self.preprocess.normalize(batch.cpu())  # float32 (B, 3, c, c)
        return torch.from_numpy(self.session.run(None, {self._input.name: x.numpy()})[0])

    def as_module(self) -> nn.Module:
        """The session as a module: normalised float32 ``(B, 3, c, c)`` -> logits, for ``evaluate.evaluate``."""
        return _OnnxModule(self)

    def _check_features(self) -> None:
        raise UserError(
            f"{self.path}: features are not supported for .onnx exports (they hold only the logits); "
            "use the checkpoint the export was made from"
        )


class _OnnxModule(nn.Module):
    def __init__(self, predictor: OnnxPredictor) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.predictor
        return torch.from_numpy(p.session.run(None, {p._input.name: x.float().cpu().numpy()})[0])


def onnx_metadata(session: Any, path: str | os.PathLike) -> Checkpoint:
    """The ``metadata_props`` that ``alexnet export`` writes, decoded (JSON values parsed, ``arch`` as written) and
    checked as every model file's metadata is (``checkpoint.from_metadata``)."""
    raw = dict(session.get_modelmeta().custom_metadata_map)
    missing = [k for k in ("classes", "preprocess") if k not in raw]
    if missing:
        raise UserError(
            f"{path}: no {' or '.join(missing)} in the ONNX metadata; "
            "alexnet.load runs files written by alexnet export --format onnx"
        )
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            meta[key] = value if key in ("arch", "input") else json.loads(value)
        except ValueError:
            raise UserError(f"{path}: ONNX metadata {key!r} is not valid JSON") from None
    return checkpoint.from_metadata(meta, str(path))


# ----------------------------------------------------------------------------------------------------------------
# saving features for users who fit their own classifier


def save_features(
    path: str | os.PathLike,
    features: torch.Tensor,
    *,
    labels: Sequence[int],
    paths: Sequence[str],
    classes: Sequence[str],
    layer: str,
) -> list[Path]:
    """Write features with labels and source paths. Returns the files written.

    ``.npy``: the float32 array, plus ``NAME.json`` with ``layer``, ``classes``, ``labels`` and ``paths``.
    ``.safetensors``: tensors ``features`` (float32) and ``labels`` (int64); ``layer``, ``classes`` and ``paths``
    (JSON strings) in the file's metadata.
    """
    path = Path(path)
    if len(labels) != len(features) or len(paths) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels and {len(paths)} paths")
    if path.suffix.lower() not in (".npy", ".safetensors"):
        raise UserError(f"{path}: a features file's name must end in .npy or .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    feats = features.detach().float().cpu().contiguous()
    if path.suffix.lower() == ".npy":
        sidecar = path.with_suffix(".json")
        info = {"layer": layer, "shape": list(feats.shape), "classes": list(classes)}
        with atomic_file(path) as tmp, atomic_file(sidecar) as tmp_sidecar:  # both or neither
            with open(tmp, "wb") as f:  # np.save(name) would append .npy to the temporary name
                np.save(f, feats.numpy())
            listed = {**info, "labels": [int(x) for x in labels], "paths": list(paths)}
            tmp_sidecar.write_text(json.dumps(listed) + "\n")
        return [path, sidecar]
    from safetensors.torch import save_file

    tensors = {"features": feats, "labels": torch.as_tensor(list(labels), dtype=torch.int64)}
    metadata = {"layer": layer, "classes": json.dumps(list(classes)), "paths": json.dumps(list(paths))}
    with atomic_file(path) as tmp:  # a torn file never replaces a good one; the umask's mode (safetensors: 0600)
        save_file(tensors, str(tmp), metadata=metadata)
    return [path]
