"""What ``/openapi.json`` says about the routes that read their own bodies (``admission`` reads them raw, so FastAPI
cannot infer them): the request bodies and query parameters, each route's answers, and the v2 example request.

``V2_EXAMPLE`` is the request the README's serving section sends with curl; tests/test_readme.py checks that the
two agree and that the app answers it as the README shows.
"""

from __future__ import annotations

from typing import Any

ERROR = {
    "description": 'refused: {"error": "what was wrong"} (see the module docstring of alexnet.serve.app for codes)',
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
        }
    },
}
_ERRORS = {str(code): ERROR for code in (400, 408, 413, 415, 422, 503, 504)}

_IMAGES = {
    "required": True,
    "description": "images as multipart/form-data (every file part is an image), or one image file as the body",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}

_RESULTS = {
    "type": "array",
    "description": "one per image, in order: its top classes, or its status and error",
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "top": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"class": {"type": "string"}, "probability": {"type": "number"}},
                },
            },
            "status": {"type": "integer"},
            "error": {"type": "string"},
        },
    },
}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}, **_ERRORS}


PREDICT: dict[str, Any] = {
    "parameters": [
        {"name": "topk", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "default": 5}}
    ],
    "requestBody": _IMAGES,
    "responses": _ok(
        "the top-k classes of each image (200 when any image was answered)",
        {"type": "object", "properties": {"model": {"type": "string"}, "results": _RESULTS}},
    ),
}

EXPLAIN: dict[str, Any] = {
    "parameters": [
        {
            "name": "target",
            "in": "query",
            "required": False,
            "description": "top1 (each image's prediction), a class name or a class index",
            "schema": {"type": "string", "default": "top1"},
        }
    ],
    "requestBody": _IMAGES,
    "responses": _ok(
        "per image: a Grad-CAM overlay as a PNG data URL, the map's peak, the predicted and target classes "
        "(404 unless the server runs with --explain; 501 for exports, which have no gradients)",
        {"type": "object", "properties": {"model": {"type": "string"}, "method": {"type": "string"}}},
    ),
}

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "datatype": {"type": "string", "enum": ["UINT8", "BYTES"]},
        "data": {"type": "array", "description": "row-major UINT8 values 0..255, or base64-encoded image files"},
    },
}

# the README's curl request (a 2x2 RGB image as a UINT8 tensor, the 2 most likely classes back)
V2_EXAMPLE: dict[str, Any] = {
    "id": "req-1",
    "inputs": [
        {
            "name": "image",
            "datatype": "UINT8",
            "shape": [1, 2, 2, 3],
            "data": [255, 0, 0, 255, 0, 0, 0, 0, 255, 0, 0, 255],
        }
    ],
    "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
}

V2_INFER: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "one input: UINT8 [H, W, C] or [B, H, W, C] images (C 3: RGB, 1: gray), or BYTES [B] base64 "
        "image files; "
        'outputs optional ("classification": k gives "probability:index:label" strings)',
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {"type": "array", "items": _TENSOR, "minItems": 1, "maxItems": 1},
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "example": V2_EXAMPLE,
            }
        },
    },
    "responses": _ok(
        "the probabilities: FP32 [B, C], or BYTES [B, k] with the classification extension",
        {
            "type": "object",
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": {"type": "object"}},
            },
        },
    ),
}
