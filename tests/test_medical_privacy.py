"""Privacy: DICOM headers carry patient names, IDs and birth dates; nothing the project prints, logs, writes to a
run folder, a report, a plot or an HTTP answer may contain them (file paths only). DICOMs with known patient
elements go through train (with plots), evaluate, predict, data check and serve; every output is searched."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from alexnet.cli import main
from alexnet.data import dicom

pydicom = pytest.importorskip("pydicom")

PHI = ("DOE^JANE", "DOE", "JANE", "PID-31415", "19700101", "SECRET-HOSPITAL")
PHI_BYTES = (b"DOE^JANE", b"JANE", b"PID-31415", b"19700101", b"SECRET-HOSPITAL")  # (3 bytes match weights by chance)
DICOM = {"content-type": "application/dicom"}
FLAGS = [
    "--max-bad-fraction",
    "0.5",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--channels-last",
    "off",
    "--workers",
    "0",
    "--seed",
    "0",
]


def _write(path: Path, a: np.ndarray) -> None:
    dicom.write(path, a, slope=1, intercept=-1024, window=(40, 400), patient_name="DOE^JANE", patient_id="PID-31415")
    ds = pydicom.dcmread(path)
    ds.InstitutionName = "SECRET-HOSPITAL"
    ds.save_as(path, enforce_file_format=True)


def _hostile(root: Path) -> None:
    """A truncated file and one whose birth date is not a date (pydicom warns quoting the value when it reads it)."""
    from pydicom import config
    from pydicom.dataelem import DataElement

    _write(root / "cut.dcm", np.zeros((64, 64), np.int16))
    data = (root / "cut.dcm").read_bytes()
    (root / "cut.dcm").write_bytes(data[: len(data) - 4000])
    _write(root / "baddate.dcm", np.zeros((64, 64), np.int16))
    ds = pydicom.dcmread(root / "baddate.dcm")
    with warnings.catch_warnings():  # pydicom warns as it is told to write the bad value: this test's doing, not ours
        warnings.simplefilter("ignore")
        ds[0x00100030] = DataElement(0x00100030, "DA", "DOE^JANE 19700101")
    old, config.settings.writing_validation_mode = config.settings.writing_validation_mode, config.IGNORE
    try:
        ds.save_as(root / "baddate.dcm", enforce_file_format=True)
    finally:
        config.settings.writing_validation_mode = old


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicoms")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for split, n in (("train", 4), ("val", 2)):
        for c, cls in enumerate(("ring", "bar")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                a = rng.normal(40, 20, (64, 64))
                a[np.abs(np.hypot(yy - 32, xx - 32) - 18) < 4] += 300 * (c == 0)
                a[26:38, 8:56] += 300 * (c == 1)
                _write(d / f"{i}.dcm", (a + 1024).astype(np.int16))
    _hostile(root / "train" / "ring")
    return root


def _leaks(text: str) -> list[str]:
    return [p for p in PHI if p.lower() in text.lower()]


def test_no_patient_data_in_any_output(data, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    common = ["--epochs", "1", "--image-size", "64", "--batch-size", "4", *FLAGS]
    assert main(["train", str(data), "--out", str(run), "--plots", "--in-memory", "off", *common]) == 0
    ckpt = str(run / "checkpoints" / "last.pt")
    assert main(["evaluate", ckpt, str(data), "--out", str(tmp_path / "eval.json"), "--device", "cpu"]) == 0
    bad = str(data / "train" / "ring" / "cut.dcm")
    assert main(["predict", ckpt, str(data / "val"), bad, "--format", "json", "--device", "cpu"]) == 1
    assert main(["data", "check", str(data), "--json", str(tmp_path / "check.json"), "--workers", "1"]) != 0
    out = capsys.readouterr()
    text = out.out + out.err + caplog.text  # pydicom logs what it finds invalid, quoting the value
    assert "cut.dcm: truncated DICOM" in text  # the file is named, its patient is not
    assert "0.dcm" in text and not _leaks(text), _leaks(text)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert (tmp_path / "eval.json").exists() and (run / "plots" / "predictions.png").exists()
    for p in written:
        raw = p.read_bytes()
        for s in PHI_BYTES:
            assert s not in raw, f"{s} in {p}"
    report = json.loads((tmp_path / "check.json").read_text())
    assert not _leaks(json.dumps(report))


@pytest.fixture(scope="module")
def served(data, tmp_path_factory):
    """The last.pt of one training step on the DICOMs (one input channel, chosen from the data), as a Predictor."""
    import alexnet

    run = tmp_path_factory.mktemp("served") / "run"
    flags = ["--epochs", "1", "--image-size", "64", "--batch-size", "4", "--max-steps-per-epoch", "1", *FLAGS]
    assert main(["train", str(data), "--out", str(run), *flags]) == 0
    return alexnet.load(run / "checkpoints" / "last.pt", device="cpu")


def _client(predictor):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from alexnet.serve.app import create_app
    from alexnet.serve.config import ServeConfig

    return TestClient(create_app(predictor, ServeConfig(decode_threads=1, name="gray")))


def test_no_patient_data_in_http_answers(data, served):
    with _client(served) as c:
        good = c.post("/predict", content=(data / "val" / "ring" / "0.dcm").read_bytes(), headers=DICOM)
        assert good.status_code == 200 and ("ring" in good.text or "bar" in good.text), good.text
        for name in ("cut.dcm", "baddate.dcm"):
            r = c.post("/predict", content=(data / "train" / "ring" / name).read_bytes(), headers=DICOM)
            assert r.status_code == (415 if name == "cut.dcm" else 200), r.text
            assert not _leaks(r.text) and not _leaks(json.dumps(dict(r.headers))), r.text


def test_a_one_channel_model_answers_dicom_uploads(data, served):
    """A DICOM upload to a served 1-channel model, raw or as a V2 BYTES tensor, gets what predict gives the file."""
    import base64

    assert served.preprocess.channels == 1 and served.model.features[0].in_channels == 1
    files = [data / "val" / "ring" / "0.dcm", data / "val" / "bar" / "1.dcm"]
    expected = served.predict(files, topk=2)
    with _client(served) as c:
        r = c.post("/predict", content=files[1].read_bytes(), headers=DICOM)
        [result] = r.json()["results"]
        assert [(t["class"], t["probability"]) for t in result["top"]] == served.predict(files[1], topk=2)[0]
        encoded = [base64.b64encode(f.read_bytes()).decode() for f in files]
        request = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": encoded}]}
        [out] = c.post("/v2/models/gray/infer", json=request).json()["outputs"]
    assert out["shape"] == [2, 2] and out["datatype"] == "FP32"
    for i, top in enumerate(expected):
        assert dict(top) == dict(zip(served.classes, out["data"][2 * i : 2 * i + 2]))
