"""The README stays true: every ```python block runs (in order, in one namespace, in an empty folder where the test
first creates the files the blocks name), its v2 infer request is answered as it shows, and its FLOPs and parameter
counts are what ``alexnet info`` prints."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from alexnet.cli import main
from alexnet.data.synthetic import CLASSES as DEMO_CLASSES
from alexnet.model import create_model
from alexnet.preprocess import Preprocess

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def fenced(lang: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(README) if m.group(1).split()[:1] == [lang]]


def save_model(path: Path, classes: list[str], crop: int = 64) -> Path:
    """A tiny model file as ``alexnet export --format safetensors`` writes it (weights + JSON sidecar)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(create_model("alexnet", num_classes=len(classes)).state_dict(), str(path))
    meta = {"arch": "alexnet", "classes": classes, "preprocess": Preprocess(resize=crop, crop=crop).to_dict()}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


# ----------------------------------------------------------------------------------------------------------------
# the Python blocks


def named_files(code: str) -> list[str]:
    """The string literals of ``code`` that name a file (they have a suffix: ``"cat.jpg"``, ``"runs/x/best.pt"``)."""
    strings = [n.value for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return [s for s in strings if re.fullmatch(r"[\w./-]+\.[A-Za-z0-9]+", s)]


def create(name: str) -> None:
    """The file a README block names, made the way a user would have it."""
    from alexnet.checkpoint import save_payload

    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".jpg", ".png"):
        rng = np.random.default_rng(len(name))
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(path)
    elif path.name == "alexnet-owt-7be5be79.pth":  # torchvision's file: its state dict, 1000 classes
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    elif path.suffix == ".pt":  # a run's checkpoint, as `make demo` leaves it (10 classes at 64 px)
        torch.manual_seed(0)
        model = create_model("alexnet", num_classes=len(DEMO_CLASSES))
        preprocess = Preprocess(resize=73, crop=64).to_dict()
        save_payload({"arch": "alexnet", "num_classes": len(DEMO_CLASSES), "model": model.state_dict(),
                         "classes": DEMO_CLASSES, "preprocess": preprocess, "config": {}}, path)  # fmt: skip
    else:
        raise AssertionError(f"the README names {name!r}: teach tests/test_readme.py to create such a file")


def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch, capsys):
    blocks = [(m.group(2), README.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(README)
              if m.group(1).split()[:1] == ["python"]]  # fmt: skip
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    for name in sorted({f for code, _ in blocks for f in named_files(code)}):
        create(name)
    ns: dict = {"__name__": "__main__"}
    for code, line in blocks:
        exec(compile("\n" * line + code, str(ROOT / "README.md"), "exec"), ns)
    # what the first block promises: the ImageNet body loaded, a fresh 10-class head, fc7 features
    file = torch.load("alexnet-owt-7be5be79.pth", weights_only=True)
    state = ns["model"].state_dict()
    assert all(torch.equal(state[k], v) for k, v in file.items() if not k.startswith("classifier.6."))
    assert state["classifier.6.weight"].shape == (10, 4096) and ns["fc7"].shape == (2, 4096)
    assert capsys.readouterr().out.count("\n") == 1  # the explain block printed one line for its one image


def test_load_weights_says_how_to_keep_a_new_head(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    create("alexnet-owt-7be5be79.pth")
    import alexnet

    with pytest.raises(alexnet.WeightsError, match=r"head has 1000 classes .* new_head=True"):
        alexnet.load_weights(create_model("alexnet", num_classes=10), "alexnet-owt-7be5be79.pth")
    with pytest.raises(alexnet.WeightsError, match=r"holds 'alexnet' weights .* create_model\('alexnet'"):
        alexnet.load_weights(create_model("alexnet2012", num_classes=1000), "alexnet-owt-7be5be79.pth")


# ----------------------------------------------------------------------------------------------------------------
# serving: the v2 request


def test_the_v2_request_of_the_readme_is_answered_as_it_shows(tmp_path):
    pytest.importorskip("fastapi", reason="alexnet serve needs pip install 'alexnet[serve]'")
    pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")
    from fastapi.testclient import TestClient

    import alexnet
    from alexnet.serve import schema
    from alexnet.serve.app import create_app
    from alexnet.serve.config import ServeConfig

    [curl] = [b for b in fenced("bash") if "/v2/models/" in b and "infer" in b]
    url = re.search(r"http://127\.0\.0\.1:8000(/v2/models/[^/ ]+/infer)", curl).group(1)
    body = json.loads(re.search(r"-d '(.*?)'", curl, re.S).group(1))
    [shown] = [json.loads(b) for b in fenced("json") if '"model_name"' in b]
    assert body == schema.V2_EXAMPLE  # the schema's example is the README's

    path = save_model(tmp_path / "best.safetensors", DEMO_CLASSES)  # `make demo`'s model is runs/demo/.../best.pt
    with TestClient(
        create_app(alexnet.load(path, device="cpu"), ServeConfig(decode_threads=1), model_path=str(path))
    ) as c:
        r = c.post(url, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert list(got) == list(shown)  # the same fields, in the same order
    assert {k: v for k, v in got.items() if k != "outputs"} == {k: v for k, v in shown.items() if k != "outputs"}
    [out], [want] = got["outputs"], shown["outputs"]
    assert {k: v for k, v in out.items() if k != "data"} == {k: v for k, v in want.items() if k != "data"}
    for data in (out["data"], want["data"]):  # "probability:index:label", most likely first, labels of the demo
        parsed = [s.split(":") for s in data]
        assert all(DEMO_CLASSES[int(i)] == label for _, i, label in parsed), data
        assert [float(p) for p, _, _ in parsed] == sorted((float(p) for p, _, _ in parsed), reverse=True)
        assert all(repr(float(np.float32(p))) == p for p, _, _ in parsed), data  # float32, every digit


# ----------------------------------------------------------------------------------------------------------------
# the two networks: counts from `alexnet info`


def test_flops_and_parameters_in_the_readme_are_what_alexnet_info_prints(capsys):
    row = {m.group(1): m.groups()[1:] for m in re.finditer(r"^\| (forward at 224 px|parameters \(1000 classes\)) "
                                                           r"\| (.*?) \| (.*?) \|$", README, re.M)}  # fmt: skip
    assert set(row) == {"forward at 224 px", "parameters (1000 classes)"}
    for column, arch in enumerate(("alexnet", "alexnet2012")):
        assert main(["info", "--arch", arch, "--image-size", "224"]) in (0, None)
        out = capsys.readouterr().out
        params = re.search(r"^total\s+([\d,]+)", out, re.M).group(1)
        gflop, gmac = re.search(r"forward: ([\d.]+) GFLOP = ([\d.]+) GMAC", out).groups()
        assert row["parameters (1000 classes)"][column] == params
        assert row["forward at 224 px"][column] == f"{gmac} GMAC ({float(gflop):.2f} GFLOP)", arch
