"""``alexnet serve`` publishes its OpenAPI schema at ``/openapi.json``, offline: no ``/docs`` or ``/redoc`` page
(they load their scripts from a CDN). The schema names every route and the bodies the POST routes read."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import alexnet
from alexnet.model import create_model
from alexnet.preprocess import Preprocess

pytest.importorskip("fastapi", reason="alexnet serve needs pip install 'alexnet[serve]'")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (pip install 'alexnet[dev]')")
from fastapi.testclient import TestClient

from alexnet.serve import schema
from alexnet.serve.app import create_app
from alexnet.serve.config import ServeConfig

ROUTES = {
    "/": "get",
    "/info": "get",
    "/metrics": "get",
    "/predict": "post",
    "/explain": "post",
    "/v2": "get",
    "/v2/health/live": "get",
    "/v2/health/ready": "get",
    "/v2/models/{name}": "get",
    "/v2/models/{name}/ready": "get",
    "/v2/models/{name}/infer": "post",
    "/v2/models/{name}/versions/{version}": "get",
    "/v2/models/{name}/versions/{version}/ready": "get",
    "/v2/models/{name}/versions/{version}/infer": "post",
}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("openapi") / "tiny.safetensors"  # weights + a JSON sidecar, as export writes
    save_file(create_model("alexnet", num_classes=3).state_dict(), str(path))
    meta = {"arch": "alexnet", "classes": ["a", "b", "c"], "preprocess": Preprocess(resize=64, crop=64).to_dict()}
    path.with_suffix(".json").write_text(json.dumps(meta))
    predictor = alexnet.load(path, device="cpu")
    with TestClient(create_app(predictor, ServeConfig(decode_threads=1), model_path=str(path))) as c:
        yield c


def test_openapi_schema_names_every_route_and_the_bodies_they_read(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    spec = r.json()
    assert spec["openapi"].startswith("3.") and spec["info"]["title"] == "alexnet serve"
    assert {path: next(iter(ops)) for path, ops in spec["paths"].items()} == ROUTES
    predict = spec["paths"]["/predict"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert [p["name"] for p in predict["parameters"]] == ["topk"]
    assert {"200", "413", "415", "503"} <= set(predict["responses"])
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["example"] == schema.V2_EXAMPLE
    assert [p["name"] for p in infer["parameters"]] == ["name"]  # the path parameter FastAPI found
    assert all(op.get("description") for ops in spec["paths"].values() for op in ops.values())


def test_the_routes_take_the_query_parameters_the_schema_names(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/predict", "/v2/models/{name}/infer"):
        named = [p["name"] for p in paths[path]["post"].get("parameters", []) if p["in"] == "query"]
        r = client.post(path.replace("{name}", "tiny") + "?nope=1", content=b"x")
        assert r.status_code == 400 and r.json()["error"].endswith(f"takes {', '.join(named) or 'no query parameters'}")


def test_no_docs_page_that_needs_the_internet(client):
    for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        r = client.get(page)
        assert r.status_code == 404 and "no such endpoint" in r.json()["error"]
    assert "cdn" not in client.get("/openapi.json").text.lower()


def test_the_example_request_of_the_schema_is_answered(client):
    r = client.post("/v2/models/tiny/infer", content=json.dumps(schema.V2_EXAMPLE))
    assert r.status_code == 200, r.text
    [out] = r.json()["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, 2]
