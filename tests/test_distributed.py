"""Several processes (gloo on the CPU): DDP trains as one process does with the same global batch (two ranks on one
node, and two nodes), a stop signal to one rank ends every rank cleanly, the final report covers the whole val split,
and a group that torchrun restarts after one rank was killed resumes from ``last.pt`` to the same weights."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import alexnet.training.loop
from alexnet.checkpoint import load as load_checkpoint
from alexnet.data.pack import pack_dataset
from alexnet.data.synthetic import make_synthetic
from alexnet.distributed import Preempted
from alexnet.training import train
from alexnet.weights import read_state_dict

from .test_train import PINNED_FLAGS, tiny_config

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
    for k in sa:  # 3 steps move the weights by ~1e-3 and biases by ~1e-4 (kaiming init: zero biases); float noise
        # (half batches summed across ranks) grew to 2e-5 where one ReLU flipped (seen on an AVX2 CPU): a wrong
        # gradient average, a rank on the wrong images or a missed step moves them by the size of an update
        assert torch.allclose(sa[k], sb[k], rtol=1e-4, atol=5e-5), k


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
    assert load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt").step == 3
    raw = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert not any(k.startswith("module.") for k in raw)  # saved unwrapped, as other tools read it
    epoch = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()][-1]
    single_epoch = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()][-1]
    assert epoch["train_loss"] == pytest.approx(single_epoch["train_loss"], rel=1e-5)  # summed over both ranks


def _sigterm_to_rank_1(rank, world_size, port, data, out, results):
    _join(rank, world_size, port)
    if rank == 1:  # only this rank receives SIGTERM, during its second step; rank 0 never does
        real, calls = alexnet.training.loop.train_step, [0]

        def step(*args, **kw):
            loss = real(*args, **kw)
            calls[0] += 1
            if calls[0] == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return loss

        alexnet.training.loop.train_step = step
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
    assert (ckpt.epoch, ckpt.batch_in_epoch, ckpt.step) == (0, 2, 2)


def _final_eval(rank, world_size, port, data, last, out):
    _join(rank, world_size, port)
    dist.init_process_group("gloo")  # the caller's own group: train uses it and leaves it joined
    for ten_crop in (True, False):  # resumed after its last epoch: only the final report runs
        train(tiny_config(data, Path(out) / str(ten_crop), **DDP, resume=last, ten_crop_eval=ten_crop,
                          flip_eval=False))  # fmt: skip
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
    flags += PINNED_FLAGS  # as tiny_config
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
    assert load_checkpoint(out / "checkpoints" / "last.pt").step == 3


# ----------------------------------------------------------------------------------------------------------------
# elastic recovery: torchrun restarts the group after one rank is killed


def _worker_pid(launcher: int, rank: int) -> int:
    """The pid of the torchrun worker (a child of ``launcher``) whose environment says ``RANK=rank`` (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces
            env = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours
            continue
        if ppid == launcher and f"RANK={rank}".encode() in env:
            return int(stat.parent.name)
    raise AssertionError(f"no worker with RANK={rank} under torchrun (pid {launcher})")


def _torchrun_elastic(data: str, out: Path, *, kill_rank_1: bool) -> str:
    """``alexnet train --resume auto --checkpoint-minutes`` under ``torchrun --max-restarts 1`` with two processes;
    with ``kill_rank_1``, SIGKILL rank 1 as soon as the first timed ``last.pt`` exists (rank 0 saves it after step 1
    while rank 1 waits for it in step 2). Returns everything torchrun and the workers printed."""
    flags = ["--out", str(out), "--epochs", "1", "--batch-size", "8", "--max-steps-per-epoch", "3", "--seed", "3"]
    flags += ["--image-size", "64", "--resize-size", "72", "--workers", "0", "--log-every", "1", "--dropout", "0.5"]
    flags += ["--device", "cpu", "--precision", "fp32", "--channels-last", "off", "--resume", "auto"]  # one CPU path
    flags += ["--checkpoint-minutes", "1e-5"]  # a timed save after every step; dropout: the RNG state matters
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    launch += ["--max-restarts", "1", "--monitor-interval", "0.1"]
    # By default torchrun's rendezvous store outlives a restart, and the restarted gloo group can read the killed
    # group's addresses from it ("Gloo connectFullMesh failed ... Connection refused", pytorch/pytorch#135712):
    # a fresh store per round.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    log = out.parent / f"{out.name}.log"  # a file, not a pipe nobody reads while we wait
    with log.open("w") as f:
        proc = subprocess.Popen([*launch, "-m", "alexnet", "train", data, *flags], env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        if kill_rank_1:
            while not (out / "checkpoints" / "last.pt").exists():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.02)
            os.kill(_worker_pid(proc.pid, rank=1), signal.SIGKILL)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: the session it leads
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker to kill in /proc")
def test_torchrun_restart_after_sigkill_resumes_to_the_uninterrupted_weights(tiny, tmp_path):
    """SIGKILL rank 1 mid-epoch: torchrun restarts both ranks, they resume from the timed ``last.pt`` (model,
    momentum, RNG, data position, the epoch's loss so far) and end with the same weights, bit for bit, as a run with
    the same flags that nobody killed."""
    plain = _torchrun_elastic(tiny, tmp_path / "plain", kill_rank_1=False)
    killed = _torchrun_elastic(tiny, tmp_path / "killed", kill_rank_1=True)
    assert "resumed from" not in plain  # --resume auto without a last.pt starts afresh
    starts = [line for line in killed.splitlines() if line.startswith("data: ")]
    resumed = [line for line in killed.splitlines() if line.startswith("resumed from ")]
    assert len(starts) == 2 and len(resumed) == 1, killed[-3000:]  # the group ran twice, the second time resumed
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    assert resumed[0].startswith(f"resumed from {last} at epoch 1, batch ")
    assert resumed[0].split(", ")[1] in ("batch 1", "batch 2")  # mid-epoch (3 steps)
    a = torch.load(tmp_path / "plain" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["step"] == b["step"] == 3 and a["model"].keys() == b["model"].keys()
    assert [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])] == []  # bit for bit
    momenta = [(s["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
               for i, s in a["optimizer"]["state"].items()]  # fmt: skip
    assert len(momenta) == len(a["model"]) and all(torch.equal(x, y) for x, y in momenta)
    epochs = [[r for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
               if r["kind"] == "epoch"] for run in ("plain", "killed")]  # fmt: skip
    assert epochs[0][-1]["train_loss"] == pytest.approx(epochs[1][-1]["train_loss"], rel=1e-9)  # over all 3 steps
