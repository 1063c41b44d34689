"""Training end to end on small synthetic data: learning, exact resume, crash-safe checkpoints, signals, DDP."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alexnet.config import resolve_config
from alexnet.data.packed import pack_dataset
from alexnet.data.synthetic import make_synthetic
from alexnet.errors import UserError
from alexnet.train import train
from alexnet.weights import load_checkpoint, read_state_dict, save_checkpoint


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """3 classes x 12 train / 4 val images of 64 px: enough to exercise every code path quickly."""
    return str(make_synthetic(tmp_path_factory.mktemp("tiny"), classes=3, per_class=12, val_per_class=4, size=64))


def tiny_config(data, out, **kw):
    flags = dict(data=data, out=str(out), epochs=4, batch_size=6, image_size=64, resize_size=72, workers=0,
                 max_steps_per_epoch=3, log_every=1, seed=3, device="cpu", precision="fp32")  # fmt: skip
    flags.update(kw)
    return resolve_config("fast", flags=flags)


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = read_state_dict(a), read_state_dict(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_exact_resume_is_bitwise_identical(tiny_data, tmp_path):
    straight = train(tiny_config(tiny_data, tmp_path / "straight", workers=2))
    first = train(tiny_config(tiny_data, tmp_path / "resumed"), stop_after_epoch=2)
    assert load_checkpoint(first / "checkpoints" / "last.pt")["epoch"] == 2
    resumed = train(tiny_config(tiny_data, tmp_path / "resumed", resume="auto"))
    # different worker counts on purpose: augmentation is keyed by sample, not by worker
    assert same_weights(straight / "checkpoints" / "last.pt", resumed / "checkpoints" / "last.pt")
    ckpt = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 4 and ckpt["step"] == 12
    assert ckpt["classes"] == ["circle", "ring", "square"]
    assert set(ckpt["preprocess"]) == {"resize", "crop", "mean", "std"}
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    epochs = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs if e["kind"] == "epoch"] == [1, 2, 3, 4]
    assert (resumed / "config.json").exists() and (resumed / "eval.json").exists()


def test_packed_data_trains_and_resumes_exactly(tiny_data, tmp_path):
    pack = tmp_path / "pack"
    pack_dataset(tiny_data, pack, size=72, workers=0, progress=False)
    # paper preset: random 64 px crops of the 72 px pack, flips and PCA colour noise from the manifest's statistics
    cfg = dict(augment="paper", max_steps_per_epoch=None, epochs=3)
    straight = train(tiny_config(str(pack), tmp_path / "straight", **cfg))
    train(tiny_config(str(pack), tmp_path / "resumed", **cfg), stop_after_epoch=1)
    resumed = train(tiny_config(str(pack), tmp_path / "resumed", resume="auto", **cfg))
    assert same_weights(straight / "checkpoints" / "last.pt", resumed / "checkpoints" / "last.pt")
    ckpt = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 3 and ckpt["step"] == 3 * (36 // 6)  # 36 train images in batches of 6, every epoch
    assert ckpt["classes"] == ["circle", "ring", "square"]
    assert ckpt["preprocess"]["resize"] == 72 and ckpt["preprocess"]["crop"] == 64
    report = json.loads((resumed / "eval.json").read_text())
    assert report["count"] == 12 and sum(map(sum, report["confusion"])) == 12  # every val image, once


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path):
    run = train(tiny_config(tiny_data, tmp_path / "run", epochs=1))
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(UserError, match="non-finite"):
        train(tiny_config(tiny_data, tmp_path / "run", epochs=2, resume="auto", lr=1e12, warmup_epochs=0))
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


_WRITER = """
import sys, torch
from alexnet.weights import save_checkpoint
path = sys.argv[1]
big = {"model": {"w": torch.randn(4_000_000)}, "epoch": 0}
i = 0
while True:
    i += 1
    big["epoch"] = i
    save_checkpoint(big, path)
    print(i, flush=True)
"""


def test_checkpoint_survives_sigkill_during_saving(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 0}, path)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # at least one complete save happened; the next one is under way
        time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt = load_checkpoint(path)  # whatever is there must load
    assert ckpt["epoch"] >= 1 and ckpt["model"]["w"].numel() == 4_000_000
    leftovers = [p for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert all(p.name.endswith(".tmp") for p in leftovers)  # only a torn temp file may remain, never a torn last.pt


def test_sigterm_saves_and_resumes(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "alexnet", "train", tiny_data, "--out", str(out), "--epochs", "200"]
    cmd += ["--batch-size", "6", "--image-size", "64", "--workers", "0", "--log-every", "1", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.2)
    while time.time() < deadline and (out / "metrics.jsonl").stat().st_size == 0:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "resume with: alexnet train" in err
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] >= 1
    resumed = subprocess.run([*cmd[:7], "--epochs", str(ckpt["epoch"] + 1), "--resume", "auto", *cmd[9:]],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {out / 'checkpoints' / 'last.pt'}" in resumed.stderr
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == ckpt["epoch"] + 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, data, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    train(tiny_config(data, out, epochs=1, batch_size=8, dropout=0.0, max_steps_per_epoch=3))
    torch.distributed.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["folder", "packed"])
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tiny_data, tmp_path, kind):
    torch.set_num_threads(1)
    data = tiny_data
    if kind == "packed":  # every sample is augmented the same way whichever rank and batch it lands in
        pack_dataset(tiny_data, tmp_path / "pack", size=72, workers=0, progress=False)
        data = str(tmp_path / "pack")
    single = train(tiny_config(data, tmp_path / "single", epochs=1, batch_size=8, dropout=0.0, max_steps_per_epoch=3))
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), data, str(tmp_path / "ddp")), nprocs=2)
    a = read_state_dict(single / "checkpoints" / "last.pt")
    b = read_state_dict(tmp_path / "ddp" / "checkpoints" / "last.pt")
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
    assert load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")["step"] == 3


def test_a_short_run_learns(tmp_path):
    """Loss falls and held-out accuracy is well above chance (1/3) after a short run on 3 classes."""
    full = make_synthetic(tmp_path / "full", classes=10, per_class=100, val_per_class=30, size=64)
    data = tmp_path / "data"
    for split in ("train", "val"):  # three classes that do not share a silhouette (circle vs square is hard early)
        for name in ("ring", "bar", "checkerboard"):
            shutil.copytree(full / split / name, data / split / name)
    run = train(tiny_config(str(data), tmp_path / "run", epochs=6, batch_size=16, max_steps_per_epoch=None,
                            log_every=10, lr=0.01, dropout=0.0))  # fmt: skip
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["kind"] == "epoch"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    report = json.loads((run / "eval.json").read_text())
    assert report["count"] == 90 and report["top1"] >= 0.8, report["top1"]  # chance: 1/3; measured 0.96


def test_evaluate_command_on_a_checkpoint(tiny_data, tmp_path):
    from alexnet.cli import main

    run = train(tiny_config(tiny_data, tmp_path / "run", epochs=1))
    out = tmp_path / "report.json"
    assert main(["evaluate", str(run / "checkpoints" / "last.pt"), "--out", str(out), "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    assert report["count"] == 12 and len(report["confusion"]) == 3
    assert report["top1"] == pytest.approx(json.loads((run / "eval.json").read_text())["top1"])
    assert main(["evaluate", str(run / "checkpoints" / "last.pt"), "--ten-crop", "--device", "cpu"]) == 0
