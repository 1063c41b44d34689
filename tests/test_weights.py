"""Weights loading: torchvision files, our checkpoints, safetensors, prefixes, errors, and refused pickles."""

import json
import os
import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from alexnet import AlexNet, AlexNet2012, WeightsError, load_weights, model_from_file
from alexnet.checkpoint import load as load_checkpoint
from alexnet.checkpoint import save_payload


@pytest.fixture(scope="module")
def tv_weights(tmp_path_factory):
    torch.manual_seed(1)
    ref = torchvision.models.alexnet(weights=None, num_classes=10)
    path = tmp_path_factory.mktemp("w") / "alexnet-tv.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


def _same(model, ref):
    return all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_loads_a_torchvision_state_dict_unchanged(tv_weights):
    ref, path = tv_weights
    m = load_weights(AlexNet(num_classes=10), path)
    assert _same(m, ref)


def test_strips_ddp_and_compile_prefixes(tmp_path, tv_weights):
    ref, _ = tv_weights
    sd = {f"module._orig_mod.{k}": v for k, v in ref.state_dict().items()}
    torch.save(sd, tmp_path / "wrapped.pth")
    assert _same(load_weights(AlexNet(num_classes=10), tmp_path / "wrapped.pth"), ref)


@pytest.mark.parametrize("text, said", [("[1, 2]", "expected a JSON object"), ("{bad", "not valid JSON")])
def test_safetensors_header_metadata_that_is_not_an_object(tmp_path, text, said):
    # the 'alexnet' entry of a safetensors header is read as the .json beside an export is, with the same messages
    weights = {"classifier.6.weight": torch.zeros(3, 4096), "classifier.6.bias": torch.zeros(3)}
    save_file(weights, str(tmp_path / "w.safetensors"), metadata={"alexnet": text})
    with pytest.raises(WeightsError, match=rf"w\.safetensors: its 'alexnet' metadata: {said}"):
        model_from_file(tmp_path / "w.safetensors")


def test_safetensors_and_checkpoint(tmp_path, tv_weights, capsys):
    ref, _ = tv_weights
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    assert _same(load_weights(AlexNet(num_classes=10), tmp_path / "w.safetensors"), ref)
    # 10 classes and no w.json: numbered classes and ImageNet's preprocessing, said (it predicted silently)
    model_from_file(tmp_path / "w.safetensors")
    assert (
        "w.safetensors: names no classes (an alexnet checkpoint or the .json beside an export does): its 10 "
        "classes are numbered" in capsys.readouterr().err
    )
    # a .json naming the classes but not the preprocessing: said too (it predicted silently with ImageNet's)
    (tmp_path / "w.json").write_text(json.dumps({"classes": list("abcdefghij")}))
    model_from_file(tmp_path / "w.safetensors")
    assert "w.safetensors: names its classes but not its preprocessing" in capsys.readouterr().err
    (tmp_path / "w.json").write_text(json.dumps({"classes": list("abcdefghia")}))  # two outputs called "a"
    with pytest.raises(WeightsError, match=r"w.json: class 'a' is named twice in 'classes'"):
        model_from_file(tmp_path / "w.safetensors")
    (tmp_path / "w.json").unlink()
    save_file(torchvision.models.alexnet(weights=None).state_dict(), str(tmp_path / "imagenet.safetensors"))
    model_from_file(tmp_path / "imagenet.safetensors")
    assert capsys.readouterr().err == ""  # 1000 classes: ImageNet weights, whose preprocessing is the default
    save_payload({"arch": "alexnet", "model": ref.state_dict(), "classes": list("abcdefghij")}, tmp_path / "c.pt")
    assert _same(load_weights(AlexNet(num_classes=10), tmp_path / "c.pt"), ref)
    model, meta = model_from_file(tmp_path / "c.pt")
    assert meta.classes == list("abcdefghij") and not model.training
    assert load_checkpoint(tmp_path / "c.pt").classes == list("abcdefghij")


def test_torchvision_file_gets_imagenet_metadata(tmp_path):
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "tv.pth")
    _, meta = model_from_file(tmp_path / "tv.pth")
    assert meta.arch == "alexnet" and len(meta.classes) == 1000
    assert meta.classes[0] == "tench" and meta.preprocess.crop == 224


def test_mismatch_names_missing_unexpected_and_misshaped_keys(tv_weights):
    _, path = tv_weights
    with pytest.raises(WeightsError) as e:
        load_weights(AlexNet(num_classes=1000), path)
    assert "classifier.6.weight: file (10, 4096) vs model (1000, 4096)" in str(e.value)
    with pytest.raises(WeightsError) as e:
        load_weights(AlexNet2012(num_classes=10), path)
    assert "mis-shaped" in str(e.value) and "features.0.weight" in str(e.value)
    sd = torch.load(path, weights_only=True)
    sd["extra.weight"] = torch.zeros(1)
    del sd["features.0.bias"]
    torch.save(sd, path.parent / "odd.pth")
    with pytest.raises(WeightsError) as e:
        load_weights(AlexNet(num_classes=10), path.parent / "odd.pth")
    assert "missing keys: features.0.bias" in str(e.value) and "unexpected keys: extra.weight" in str(e.value)


def test_not_a_weights_file_is_a_one_line_error(tmp_path):
    (tmp_path / "notes.pth").write_text("hello, not a checkpoint")
    with pytest.raises(WeightsError, match=r"notes\.pth"):
        load_weights(AlexNet(num_classes=10), tmp_path / "notes.pth")
    with pytest.raises(WeightsError, match="no such weights file"):
        load_weights(AlexNet(), tmp_path / "missing.pth")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Exploit(marker)}, bad)
    # sanity: the payload is real — plain unpickling would run it
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_Exploit(tmp_path / "proof"), f)
    with open(tmp_path / "evil.pkl", "rb") as f:
        pickle.load(f)
    assert (tmp_path / "proof").exists()
    with pytest.raises(WeightsError, match="refused"):
        load_weights(AlexNet(), bad)
    assert not marker.exists()


def test_a_folder_a_renamed_text_file_and_a_cut_short_file_are_named_as_such(tmp_path):
    """A run folder given as the model said "no such model file" (it exists); a text file renamed .pt said
    "not a readable weights file (101)"; a cut-short checkpoint gave 400 characters of miniz advice."""
    from alexnet.errors import UserError
    from alexnet.predict import load
    from alexnet.weights import read_state_dict

    with pytest.raises(UserError, match="is a folder, not a model file; give the file"):
        load(tmp_path)
    (tmp_path / "notes.pt").write_text("hello")
    torch.save({"w": torch.zeros(1000)}, tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:600])
    for name in ("notes.pt", "cut.pt"):
        with pytest.raises(WeightsError, match="not a PyTorch weights file, or one cut short") as e:
            read_state_dict(tmp_path / name)
        assert len(str(e.value)) < 200 + len(str(tmp_path)), str(e.value)
