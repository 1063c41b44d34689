"""Several processes (gloo on the CPU): DDP trains as one process does with the same global batch (two ranks on one
node, and two nodes), a stop signal to one rank ends every rank cleanly, the final report covers the whole val split."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import alexnet.train
from alexnet.data.packed import pack_dataset
from alexnet.data.synthetic import make_synthetic
from alexnet.distributed import Preempted
from alexnet.train import train
from alexnet.weights import load_checkpoint, read_state_dict

from .test_train import tiny_config

pytestmark = pytest.mark.distributed
DDP = dict(epochs=1, batch_size=8, dropout=0.0, max_steps_per_epoch=3)  # 3 steps of 8 images, 4 per rank


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """3 classes x 12 train / 4 val images of 64 px."""
    return str(make_synthetic(tmp_path_factory.mktemp("tiny"), classes=3, per_class=12, val_per_class=4, size=64))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The single-process run with DDP's global batch, once per data set."""
    runs = {}

    def run(data: str) -> Path:
        if data not in runs:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as each rank
            try:
                runs[data] = train(tiny_config(data, tmp_path_factory.mktemp("single"), **DDP))
            finally:
                torch.set_num_threads(threads)
        return runs[data]

    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world_size: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)


def _spawn(worker, *args) -> None:
    torch.multiprocessing.spawn(worker, args=(2, _free_port(), *args), nprocs=2)


def _assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = read_state_dict(a / "checkpoints" / "last.pt"), read_state_dict(b / "checkpoints" / "last.pt")
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k], sb[k], rtol=1e-4, atol=1e-6), k


# ----------------------------------------------------------------------------------------------------------------


def _ddp_worker(rank, world_size, port, data, out):
    _join(rank, world_size, port)
    train(tiny_config(data, out, **DDP))
    assert not dist.is_initialized()  # train joined the group, so it left it


@pytest.mark.parametrize("kind", ["folder", "packed"])
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tiny, one_process, tmp_path, kind):
    data = tiny
    if kind == "packed":  # every sample is augmented the same way whichever rank and batch it lands in
        pack_dataset(tiny, tmp_path / "pack", size=72, workers=0, progress=False)
        data = str(tmp_path / "pack")
    single = one_process(data)
    _spawn(_ddp_worker, data, str(tmp_path / "ddp"))
    _assert_same_weights(single, tmp_path / "ddp")
    assert load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")["step"] == 3
    raw = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert not any(k.startswith("module.") for k in raw)  # saved unwrapped, as other tools read it
    epoch = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()][-1]
    single_epoch = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()][-1]
    assert epoch["train_loss"] == pytest.approx(single_epoch["train_loss"], rel=1e-5)  # summed over both ranks


def _sigterm_to_rank_1(rank, world_size, port, data, out, results):
    _join(rank, world_size, port)
    if rank == 1:  # only this rank receives SIGTERM, during its second step; rank 0 never does
        real, calls = alexnet.train.train_step, [0]

        def step(*args, **kw):
            loss = real(*args, **kw)
            calls[0] += 1
            if calls[0] == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return loss

        alexnet.train.train_step = step
    try:
        train(tiny_config(data, out, **{**DDP, "epochs": 2}, log_every=100))
    except Preempted as e:
        Path(results, f"rank{rank}.json").write_text(json.dumps({"signum": e.signum, "exit_code": e.exit_code}))


def test_sigterm_to_one_rank_ends_both_cleanly_with_one_checkpoint(tiny, tmp_path):
    """Before: the signalled rank entered an all_reduce the other never called (gloo: "Received data size doesn't
    match expected size", SIGABRT). Now both agree at a step they both reach, save once and raise Preempted."""
    results = tmp_path / "results"
    results.mkdir()
    _spawn(_sigterm_to_rank_1, tiny, str(tmp_path / "run"), str(results))
    for rank in (0, 1):
        assert json.loads((results / f"rank{rank}.json").read_text()) == {"signum": 15, "exit_code": 143}
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.pt"]
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]) == (0, 2, 2)


def _final_eval(rank, world_size, port, data, last, out):
    _join(rank, world_size, port)
    dist.init_process_group("gloo")  # the caller's own group: train uses it and leaves it joined
    for ten_crop in (True, False):  # resumed after its last epoch: only the final report runs
        train(tiny_config(data, Path(out) / str(ten_crop), **DDP, resume=last, ten_crop_eval=ten_crop))
    assert dist.is_initialized()
    dist.destroy_process_group()


def test_final_reports_under_ddp_cover_the_whole_val_split(tiny, tmp_path):
    """Ten crops, and the centre-crop report of a run resumed after its last epoch, equal one process's numbers for
    the same weights (before: rank 0 evaluated its own shard of val only, 6 of 12 images)."""
    single = train(tiny_config(tiny, tmp_path / "single", **DDP, ten_crop_eval=True))
    _spawn(_final_eval, tiny, str(single / "checkpoints" / "last.pt"), str(tmp_path / "ddp"))
    one, two = (json.loads((run / "eval.json").read_text()) for run in (single, tmp_path / "ddp" / "True"))
    assert one["ten_crop"] and two["ten_crop"] and one["count"] == two["count"] == 12
    assert (two["confusion"], two["top1"], two["top5"]) == (one["confusion"], one["top1"], one["top5"])
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    centre = json.loads((tmp_path / "ddp" / "False" / "eval.json").read_text())
    epoch = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()][-1]
    assert centre["count"] == 12 and centre["top1"] == epoch["val_top1"]
    assert centre["loss"] == pytest.approx(epoch["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_two_nodes_match_one_process(tiny, one_process, tmp_path):
    """Two ``torchrun --nnodes 2`` launches on 127.0.0.1, one process each, train as one process does."""
    single = one_process(tiny)
    out = tmp_path / "two-nodes"
    flags = ["--out", str(out), "--epochs", "1", "--batch-size", "8", "--dropout", "0", "--max-steps-per-epoch", "3"]
    flags += ["--image-size", "64", "--resize-size", "72", "--workers", "0", "--log-every", "1", "--seed", "3"]
    flags += ["--device", "cpu", "--precision", "fp32"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    launch += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pipes = dict(env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = ["-m", "alexnet", "train", tiny, *flags]
    procs = [subprocess.Popen([*launch, "--node-rank", str(node), *run], **pipes) for node in (0, 1)]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    _assert_same_weights(single, out)
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 3
