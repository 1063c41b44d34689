"""The Open Inference Protocol v2 (KServe, Triton), REST subset: a request's one input parsed, and the answers
formatted, in one place (as pytorch/serve's request envelopes: one parse/format pair per protocol).

UINT8 tensors are ``[H, W, C]`` or ``[B, H, W, C]``, C 3 (RGB, the layout images decode to) or 1 (gray; the
metadata advertises the model's own: 1 for a grayscale model, which takes RGB as luma); BYTES tensors ``[B]`` hold
base64-encoded image files. The one output, ``probabilities``, is FP32 ``[B, C]``, or with Triton's classification
extension (``"parameters": {"classification": k}``) BYTES ``[B, k]`` of ``"probability:index:label"``. Triton's
binary tensor data extension (raw tensors after a JSON header) is a 400 saying so.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..text import plural
from .wire import HTTPError, class_count, shown

MAX_ID_CHARS = 256  # a request's id, echoed back in the answer
MODEL_VERSION = "1"  # the model's one version: /v2/models/NAME/versions/1/... are its routes too
NO_BINARY_DATA = (
    "Triton's binary tensor data extension is not supported: send the input as JSON data, UINT8 values or BYTES "
    "(base64 image files)"
)


def server_metadata() -> dict[str, Any]:
    from importlib.metadata import version

    return {"name": "alexnet", "version": version("alexnet"), "extensions": ["classification"]}


def model_metadata(name: str, backend: str, num_classes: int, channels: int = 3) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": "onnxruntime_onnx" if backend == "onnxruntime" else "pytorch",
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, channels]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, num_classes]}],
    }


# ----------------------------------------------------------------------------------------------------------------
# parse


def check_headers(headers: Mapping[str, str]) -> None:
    """400 for a request in Triton's binary tensor data extension (a JSON header of Inference-Header-Content-Length
    bytes, then raw tensors), before its body is read: its bytes are not JSON."""
    if "inference-header-content-length" in headers:
        raise HTTPError(400, f"{NO_BINARY_DATA} (the request has an Inference-Header-Content-Length header)")


def parse_infer_request(
    body: bytes, bounds_pixels: int, bounds_aspect: float, max_images: int, num_classes: int
) -> dict[str, Any]:
    """The one input of a v2 ``infer`` request: ``{"images": [uint8 (3, H, W) tensors or encoded bytes], "outputs":
    [requested outputs], "id": ...}``. A ``"classification"`` count over ``num_classes`` is a 400, as ``?topk``."""
    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPError(400, f"the body is not JSON ({str(e)[:200]})") from None
    except RecursionError:  # the parser recurses once per [ or {
        raise HTTPError(400, "the body is JSON nested too deep") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or len(req["inputs"]) != 1:
        raise HTTPError(400, 'expected {"inputs": [one tensor]} (an image tensor or encoded image files)')
    rid = req.get("id")
    if rid is not None and not (isinstance(rid, str) and len(rid) <= MAX_ID_CHARS):
        raise HTTPError(400, f"id {shown(rid)}: must be a string of at most {MAX_ID_CHARS} characters")
    _check_parameters(req, "the request")
    # JSON true/false among numbers become 1/0 in numpy's array: looked for only when the body spells one
    maybe_bools = b"true" in body or b"false" in body
    images = _input_images(req["inputs"][0], bounds_pixels, bounds_aspect, max_images, maybe_bools)
    return {
        "images": images,
        "outputs": _outputs(req.get("outputs", [{"name": "probabilities"}]), num_classes),
        "id": rid,
    }


def _check_parameters(obj: dict[str, Any], where: str) -> None:
    if not isinstance(obj.get("parameters", {}), dict):
        raise HTTPError(400, f"{where}'s parameters {shown(obj['parameters'])}: expected an object")


def _input_images(tensor: Any, bounds_pixels: int, bounds_aspect: float, max_images: int, maybe_bools: bool) -> list:
    if not isinstance(tensor, dict):
        raise HTTPError(400, "an input must be an object with name, shape, datatype and data")
    _check_parameters(tensor, "the input")
    if "binary_data_size" in tensor.get("parameters", {}):
        raise HTTPError(400, f"{NO_BINARY_DATA} (the input has a binary_data_size parameter)")
    shape, datatype, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if not (isinstance(shape, list) and 0 < len(shape) < 8 and all(type(s) is int and s >= 0 for s in shape)):
        raise HTTPError(400, f"input shape {shown(shape)}: expected a list of sizes")
    if 0 in shape:
        raise HTTPError(400, f"input shape {shape}: no image in the request (every size must be at least 1)")
    if not isinstance(data, list):
        raise HTTPError(400, "input data: expected a list (row-major)")
    if datatype == "UINT8":
        return _uint8_images(shape, data, bounds_pixels, bounds_aspect, max_images, maybe_bools)
    if datatype == "BYTES":
        return _bytes_images(shape, data, max_images)
    raise HTTPError(400, f"input datatype {shown(datatype)}: send UINT8 image tensors or BYTES (base64 image files)")


def _outputs(outputs: Any, num_classes: int) -> list[dict[str, Any]]:
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise HTTPError(400, "outputs: expected a list of objects")
    for o in outputs:
        if o.get("name") != "probabilities":
            raise HTTPError(400, f"output {shown(o.get('name'))}: this model has one output, 'probabilities'")
        _check_parameters(o, "an output")
        k = (o.get("parameters") or {}).get("classification")
        if k is not None:
            without = f"without it: the {num_classes} probabilities as FP32"
            class_count(k if type(k) is int else None, num_classes, f"classification {shown(k)}", without)
    return outputs


def _uint8_images(
    shape: list[int], data: list, max_pixels: int, max_aspect: float, max_images: int, maybe_bools: bool
) -> list:
    """uint8 ``(C, H, W)`` tensors of a UINT8 input; ``maybe_bools``: whether ``data`` may hold a JSON true or false
    (False only when the body has neither: then no per-element look for them)."""
    if len(shape) == 3:
        shape = [1, *shape]
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise HTTPError(400, f"UINT8 input shape {shape}: expected [H, W, C] or [B, H, W, C], C 3 (RGB) or 1 (gray), "
                        "channels last")  # fmt: skip
    b, h, w, _ = shape
    if b > max_images:
        raise HTTPError(413, f"{b} images in one request: at most {max_images} (--queue)")
    if min(h, w) < 1 or h * w > max_pixels or max(h, w) > max_aspect * min(h, w):
        raise HTTPError(
            422, f"refused a {w}x{h} image tensor: over {max_pixels:,} pixels or a {max_aspect:g}:1 aspect ratio"
        )
    try:
        a = np.asarray(data)
    except (ValueError, TypeError, RecursionError):  # ragged or too deeply nested lists
        raise HTTPError(400, "UINT8 input data: not a regular array") from None
    if a.size != math.prod(shape):
        raise HTTPError(400, f"UINT8 input data has {plural(a.size, 'value')}; shape {shape} needs "
                        f"{math.prod(shape):,}")  # fmt: skip
    if a.size and (a.dtype.kind not in "iu" or a.min() < 0 or a.max() > 255):
        raise HTTPError(400, "UINT8 input data: values must be integers from 0 to 255")
    if maybe_bools and bool in set(map(type, np.asarray(data, dtype=object).flat)):  # numpy took true for 1
        raise HTTPError(400, "UINT8 input data: values must be integers from 0 to 255, not true or false")
    a = a.astype(np.uint8).reshape(shape)
    return [torch.from_numpy(a[i]).permute(2, 0, 1).contiguous() for i in range(b)]  # uint8 (C, H, W) each


def _bytes_images(shape: list[int], data: list, max_images: int) -> list[bytes]:
    if len(shape) != 1 or shape[0] != len(data):
        raise HTTPError(400, f"BYTES input shape {shape}: expected [{len(data)}], one base64 image file per element")
    if len(data) > max_images:
        raise HTTPError(413, f"{len(data)} images in one request: at most {max_images} (--queue)")
    out = []
    for i, s in enumerate(data):
        try:
            out.append(base64.b64decode(s, validate=True))
        except (TypeError, ValueError, binascii.Error):
            raise HTTPError(400, f"BYTES input element {i}: not a base64 string") from None
    return out


# ----------------------------------------------------------------------------------------------------------------
# format


def infer_response(
    probs: torch.Tensor, request: dict[str, Any], name: str, classes: list[str], top: Any
) -> dict[str, Any]:
    """The answer to ``request`` (as ``parse_infer_request`` returns it) from float32 ``(B, C)`` probabilities;
    ``top(row, k)`` ranks one row as ``[(class index, probability)]``, most likely first."""
    outputs = []
    for o in request["outputs"]:
        k = (o.get("parameters") or {}).get("classification")
        if k is None:
            data = probs.flatten().tolist()
            outputs.append({"name": "probabilities", "datatype": "FP32", "shape": list(probs.shape), "data": data})
        else:  # Triton's classification extension: "probability:index:label", most likely first
            data = [f"{p}:{i}:{classes[i]}" for row in probs for i, p in top(row, k)]
            outputs.append({"name": "probabilities", "datatype": "BYTES", "shape": [len(probs), k], "data": data})
    answer: dict[str, Any] = {"model_name": name, "model_version": MODEL_VERSION, "outputs": outputs}
    if request["id"] is not None:
        answer["id"] = request["id"]
    return answer
