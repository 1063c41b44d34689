"""Settings chosen from the data (``alexnet.auto``) and the step plan of a time budget: each rule on small, large and
odd-sized sets, against values worked out by hand."""

from __future__ import annotations

import json
import math
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.auto import (
    choose_batch_size,
    choose_image_size,
    choose_warmup_epochs,
    plan_steps,
    resolve_auto,
    scaled_lr,
)
from alexnet.config import TrainConfig, parse_duration, resolve_config
from alexnet.data.sources import open_dataset
from alexnet.distributed import Preempted
from alexnet.errors import UserError
from alexnet.training.state import _best, stored_best
from tests.test_train import signal_at_steps


@pytest.mark.parametrize(
    "side, crop",
    [(8, 64), (28, 64), (32, 64), (64, 64), (73, 64), (96, 84), (128, 112), (256, 224), (500, 224), (4000, 224)],
)
def test_image_size_is_224_of_256_of_the_shorter_side_within_64_and_224(side, crop):
    assert choose_image_size(side) == crop


@pytest.mark.parametrize(
    "images, batch",
    [(10, 10), (16, 16), (600, 16), (1437, 16), (1600, 32), (3000, 32), (3200, 64), (6399, 64), (6400, 128),
     (12800, 128), (60000, 128)],
)  # fmt: skip
def test_batch_is_the_largest_giving_fifty_steps_per_epoch(images, batch):
    assert choose_batch_size(images) == batch
    if batch > 16:
        assert images // batch >= 50


def test_batch_is_a_multiple_of_the_processes():
    assert choose_batch_size(3000, world_size=3) == 33 and choose_batch_size(60000, world_size=7) == 133
    assert choose_batch_size(10, world_size=4) == 8 and choose_batch_size(3, world_size=4) == 4  # 10 images: not 16


def test_lr_is_0_01_scaled_down_below_batch_32_up_above_64_and_warmup_is_20_steps_at_most_half_an_epoch():
    # 0.01 from batch 32 to 64 (larger lr measured worse), scaled by sqrt(batch/32) below, sqrt(batch/64) above
    assert scaled_lr(64) == scaled_lr(32) == pytest.approx(0.01)
    assert scaled_lr(128) == pytest.approx(0.01 * math.sqrt(2)) and scaled_lr(256) == pytest.approx(0.02)
    assert scaled_lr(16) == pytest.approx(0.01 / math.sqrt(2)) and scaled_lr(8) == pytest.approx(0.005)
    assert choose_warmup_epochs(93) == pytest.approx(20 / 93, abs=1e-3)  # the demo: 20 steps
    assert choose_warmup_epochs(30) == 0.5  # at most half an epoch


@pytest.mark.parametrize(
    "text, seconds", [("300", 300), ("90s", 90), ("5m", 300), ("1.5h", 5400), ("1h30m", 5400), ("1d2h3m4s", 93784)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_a_budget_too_short_to_keep_is_refused():
    with pytest.raises(UserError, match=r"--time-budget '10s': must be between 30 seconds and 30 days"):
        TrainConfig(time_budget="10s")  # (1s took 14 s: the set-up alone)
    assert TrainConfig(time_budget="30s").time_budget == "30s"


@pytest.mark.parametrize("text", ["", "5 minutes", "m5", "5m3", "-5m", "1e3", "5mm", "1m1m", "5s5m"])  # 1m1m: 2 min?
def test_bad_durations_are_one_line_naming_the_flag(text):
    with pytest.raises(UserError, match="--time-budget"):
        parse_duration(text)
    with pytest.raises(UserError, match="--time-budget"):
        TrainConfig(time_budget=text)


def test_auto_written_out_means_the_default_and_explicit_values_win():
    cfg = resolve_config(flags={"image_size": "auto", "batch_size": "auto", "lr": "auto", "in_memory": "auto"})
    assert (cfg.image_size, cfg.batch_size, cfg.lr, cfg.in_memory) == (None, None, None, None)
    with pytest.raises(UserError, match="--image-size 'autox'"):
        TrainConfig(image_size="autox")


def _folder(root, size, per_class, classes=3):
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for c in range(classes):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(n):
                w, h = size if isinstance(size, tuple) else (size, size)
                Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_resolve_auto_reads_the_image_headers(tmp_path):
    dataset = open_dataset(_folder(tmp_path / "d", 28, 30))  # 90 train images of 28 px, grayscale
    cfg, notes = resolve_auto(TrainConfig(data=str(tmp_path / "d")), dataset)
    assert (cfg.image_size, cfg.batch_size, cfg.epochs, cfg.schedule) == (64, 16, 16, "cosine")
    assert cfg.lr == pytest.approx(scaled_lr(16), rel=1e-5)
    assert cfg.warmup_epochs == 0.5 and cfg.dropout == 0.0  # 16 epochs: short, no dropout
    paper, _ = resolve_auto(resolve_config("paper", flags={"data": str(tmp_path / "d")}), dataset)
    assert (paper.dropout, paper.batch_size, paper.lr, paper.epochs) == (0.5, 128, 0.01, 90)  # the recipe's own
    assert any("28x28 px" in n for n in notes) and any("90 training images" in n for n in notes)
    given = TrainConfig(
        data=str(tmp_path / "d"),
        image_size=96,
        batch_size=8,
        lr=0.1,
        warmup_epochs=0.0,
        epochs=2,
        schedule="cosine",
        dropout=0.3,
    )
    same, notes = resolve_auto(given, dataset)
    assert same == given and notes == []  # explicit values always win


def test_the_warm_up_note_counts_the_steps_below_the_peak_lr(tmp_path):
    from alexnet.training.schedule import lr_factor

    dataset = open_dataset(_folder(tmp_path / "d", 28, 2))  # 6 images: batch 6, one step per epoch
    cfg, notes = resolve_auto(TrainConfig(data=str(tmp_path / "d")), dataset)
    assert "warm-up 0.5 epochs (1 step)" in notes  # was "(0 steps)", though the first step ran at 1% of the lr
    assert lr_factor(cfg, 0, 1) == 0.01 and lr_factor(cfg, 1, 1) > 0.99


def test_resolve_auto_with_mixed_sizes_takes_the_median_shorter_side(tmp_path):
    root = _folder(tmp_path / "a", (300, 200), 5)
    _folder(tmp_path / "b", (40, 500), 2)
    for p in (tmp_path / "b" / "train").rglob("*.png"):
        p.rename(root / "train" / p.parent.name / f"b{p.name}")
    cfg, notes = resolve_auto(TrainConfig(), open_dataset(root))  # 15 images with shorter side 200, 6 with 40
    assert cfg.image_size == choose_image_size(200) == 175 and any("median shorter side 200 px" in n for n in notes)


def test_a_time_budget_decays_linearly_and_leaves_epochs_open(tmp_path):
    dataset = open_dataset(_folder(tmp_path / "d", 70, 4))
    cfg, _ = resolve_auto(TrainConfig(time_budget="2m"), dataset)
    assert (cfg.schedule, cfg.epochs) == ("linear", None)


def test_plan_fits_steps_epoch_ends_and_the_final_part_in_the_budget():
    # 100 s left, 0.1 s per step, 50-step epochs ending with 2 s of validation, 5 s at the end
    total = plan_steps(remaining=100, step_seconds=0.1, steps_done=10, steps_per_epoch=50, epoch_seconds=2,
                       final_seconds=5)  # fmt: skip

    def cost(t):
        return (t - 10) * 0.1 + math.ceil(t / 50) * 2 + 5

    assert cost(total) <= 100 < cost(total + 1)
    # by hand: 95 s before the final 5; finishing epoch 1 costs 40 x 0.1 + 2 = 6 s, a full epoch 7 s; 12 full ones
    # (84 s) leave 5 s: 2 s for one more epoch end, 3 s for 30 steps -> 50 + 12 x 50 + 30
    assert total == 680
    assert plan_steps(remaining=100, step_seconds=0.1, steps_done=10, steps_per_epoch=50, epoch_seconds=2,
                      max_steps=200) == 200  # fmt: skip
    assert plan_steps(remaining=-5, step_seconds=0.1, steps_done=10, steps_per_epoch=50, epoch_seconds=2) == 10


# ----------------------------------------------------------------------------------------------------------------
# training with a time budget, and with no flags at all


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from alexnet.data.synthetic import make_synthetic

    return str(make_synthetic(tmp_path_factory.mktemp("shapes"), classes=3, per_class=12, val_per_class=4, size=64))


class FakeClock:
    """The budget's clock made deterministic: training step n (1-based) takes ``speed(n)`` seconds and each
    validation ``eval_s`` per view (the image, and its mirror for the final report) of its ``val_images`` images;
    checkpoints cost what the plan estimates but take no time. ``remaining`` is what is left of ``total``; the speed
    a re-plan measures is ``speed`` at its step. ``steps`` / ``evals`` (views of val validated) may be set to resume."""

    def __init__(self, monkeypatch, total: float, speed, eval_s: float = 1.0, val_images: int = 12) -> None:
        import alexnet.training.budget as B
        import alexnet.training.loop as L

        self.total, self.speed, self.eval_s, self.steps, self.evals = total, speed, eval_s, 0, 0
        real_step, real_eval = L.train_step, L.evaluate

        def step(*a, **k):
            self.steps += 1
            return real_step(*a, **k)

        def evaluate(model, loader, **k):
            self.evals += (2 if k.get("flip") else 1) * loader.num_samples / val_images
            return real_eval(model, loader, **k)

        monkeypatch.setattr(L, "train_step", step)
        monkeypatch.setattr(L, "evaluate", evaluate)
        monkeypatch.setattr(B.Budget, "step_seconds", lambda b: speed(self.steps))
        monkeypatch.setattr(B.Budget, "window_seconds", lambda b, step, device: speed(step))
        monkeypatch.setattr(B.Budget, "remaining", lambda b: self.total - self.used())
        monkeypatch.setattr(B.Budget, "costs", lambda b, est_eval, est_save: (self.eval_s / val_images, est_save))

    def used(self) -> float:
        return sum(self.speed(n) for n in range(1, self.steps + 1)) + self.evals * self.eval_s


def _budget_config(data, out, **kw):
    flags = dict(data=data, out=str(out), time_budget="50s", batch_size=6, image_size=64, workers=0, log_every=1,
                 seed=3, device="cpu", precision="fp32", channels_last=False)  # fmt: skip
    flags.update(kw)
    return resolve_config("fast", flags=flags)


def _lrs(run) -> list[float]:
    return [r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]


def test_a_step_time_that_doubles_is_followed_and_the_run_ends_on_time(shapes, tmp_path, monkeypatch, capsys):
    """Re-planning by hand: 1 s per step, then 3 s from step 13 on, 50 s in all (36 images in batches of 6: 6 steps
    per epoch). The first plan (at step 6) is too long for the slower steps; re-plans shorten it, the run's steps and
    validations end within the budget, and the lr bends (no jump) to zero at the new end."""
    from alexnet.checkpoint import load as load_checkpoint
    from alexnet.training import train
    from alexnet.training.budget import BUDGET_MARGIN

    clock = FakeClock(monkeypatch, 50.0, lambda n: 1.0 if n <= 12 else 3.0)
    monkeypatch.setattr("alexnet.data.pipeline.BUDGET_VAL_IMAGES", 6)  # the epoch ends before the last: 6 of 12
    threads = torch.get_num_threads()
    run = train(_budget_config(shapes, tmp_path / "run"))
    assert torch.get_num_threads() == threads  # a thread count tried under the slow-down is given back
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    first, last = ckpt.plan[0], ckpt.plan[-1]
    assert first[0] == 6 and first[2] == 1_000_000 and last[2] == 3_000_000, ckpt.plan
    assert last[1] < first[1] and ckpt.step == ckpt.total_steps == last[1], ckpt.plan  # the new end, reached
    assert clock.used() <= 50.0 * (1 - BUDGET_MARGIN)  # on time (checkpoint costs are reserved on top)
    assert clock.used() >= 50.0 - 20  # and not by stopping early: 20 s = the final save reserve and a step or two
    lrs = _lrs(run)
    warm = round(ckpt.config["warmup_epochs"] * 6)
    drops = [a - b for a, b in zip(lrs[warm:], lrs[warm + 1 :])]
    assert min(drops) >= -1e-12, drops  # falls after the warm-up
    # bends, never jumps: no step drops more than the final, steeper slope (re-planning by the old formula would drop
    # the lr at the re-plan step by the plans' difference, 0.3 of the peak here, in one step)
    assert max(drops) <= drops[-1] * 1.001 + 1e-12 and drops[-1] > 1.5 * drops[warm + 1], drops
    assert lrs[-1] <= drops[-1] * 1.001  # the last step's lr: one step from zero
    out = capsys.readouterr().out.splitlines()  # the run's log lines
    assert any(line.startswith(f"time budget: re-planned at step {ckpt.plan[1][0]}: 3.000 s per step") for line in out)
    assert any(line.startswith("final evaluation (last epoch, ") for line in out)
    # every epoch line but the last gives the whole run's time left; "best so far" marks each val top-1 improvement
    # (under a budget last.pt is saved at most once a minute, so best.pt alone would miss some)
    epochs = [line for line in out if line.startswith("epoch ") and ": train loss" in line]
    records = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
    assert len(epochs) == len(records) >= 2
    assert all(", about " in line and " left" in line for line in epochs[:-1]) and " left" not in epochs[-1]
    # every 2nd val image at the epoch ends before the last; all 12 at the last, with their mirrors: that one pass
    # is also the final report (no other validation ran)
    assert [r["val_count"] for r in records] == [6] * (len(records) - 1) + [12], records
    assert all(" (6 of the 12 val images)" in line for line in epochs[:-1]) and " val images)" not in epochs[-1]
    assert clock.evals == (len(records) - 1) / 2 + 2
    final = json.loads((run / "eval.json").read_text())
    assert (final["count"], final["flip"], final["centre_top1"]) == (12, True, records[-1]["val_top1"])
    tops = [r["val_top1"] for r in records]
    improved = [i == 0 or t > max(tops[:i]) for i, t in enumerate(tops)]
    assert [", best so far" in line for line in epochs] == improved, (epochs, tops)
    # an improvement in an epoch that was not saved says so (it claimed to be the best while best.pt held another)
    unsaved = [up and not r["is_best"] for up, r in zip(improved, records)]
    assert [line.endswith(")") and "(not saved: " in line for line in epochs] == unsaved, epochs
    # a resumed run compares with the best seen, not the best saved: the checkpoint keeps it when they differ
    saved = {"metric": "val_top1", "value": 0.5, "epoch": 2}
    assert stored_best(saved, 0.5) == saved and _best(saved) == {"best": saved, "best_seen": None}
    assert _best(stored_best(saved, 0.75)) == {"best": saved, "best_seen": 0.75}
    assert _best({**saved, "seen": "0.9"})["best_seen"] is None  # a checkpoint's word is checked, not trusted
    if threads > 1:  # slowed 3x: one thread fewer is tried for a window (this short run may end during it)
        assert f"time budget: CPU threads trying {threads - 1} (steps at 3.000 s, fastest on {threads}: 1.000 s)" in out
    assert out[-1].startswith(f"note: this run got {ckpt.step} steps of the {first[1]} first planned (steps slowed "
                              "from 1.000 to 3.000 s"), out[-1]  # fmt: skip


def test_the_epoch_ends_of_a_budget_validate_every_kth_image(tmp_path):
    """``spread_subset``: every k-th image, k the smallest giving at most ``most``: class shares kept in a split in
    class order; an in-memory (or packed) split stays one, a strided view of the same pixels."""
    import numpy as np

    from alexnet.data.pack.reader import PackedSplit
    from alexnet.data.pipeline import spread_subset
    from alexnet.data.split import Subset

    images, labels = np.zeros((10, 4, 4, 3), np.uint8), np.repeat(np.arange(2), 5)
    packed = PackedSplit(tmp_path, "val", images, labels, ["a", "b"], 4, {})
    sub = spread_subset(packed, 4)  # k = 3: images 0, 3, 6, 9
    assert isinstance(sub, PackedSplit) and np.shares_memory(sub.images, images)
    assert sub.labels.tolist() == [0, 0, 1, 1] and len(sub) == 4
    assert spread_subset(packed, 10) is packed
    folder = Subset(packed, range(10))  # any other split: a Subset of it
    assert spread_subset(folder, 5).indices == [0, 2, 4, 6, 8] and spread_subset(folder, 5).root == tmp_path


def test_a_resumed_budget_repeats_the_plans_exactly(shapes, tmp_path, monkeypatch):
    """Exact resume across a re-plan: stopped by Ctrl-C after the speed changed (the plans so far are in last.pt),
    resumed with the clock where it was: the same plans, the same weights."""
    import alexnet.training.budget
    from alexnet.checkpoint import load as load_checkpoint
    from alexnet.training import train
    from alexnet.weights import read_state_dict

    speed = lambda n: 1.0 if n <= 12 else 2.0  # noqa: E731
    # bit for bit only on one thread count: another count sums floats in another order (README, "time budget")
    no_thread_change = lambda: monkeypatch.setattr(alexnet.training.budget, "SLOWED", float("inf"))  # noqa: E731
    FakeClock(monkeypatch, 50.0, speed)
    no_thread_change()
    straight = train(_budget_config(shapes, tmp_path / "straight"))
    monkeypatch.undo()
    FakeClock(monkeypatch, 50.0, speed)
    no_thread_change()
    signal_at_steps(monkeypatch, {20: [signal.SIGINT]})
    with pytest.raises(Preempted):
        train(_budget_config(shapes, tmp_path / "resumed"))
    stopped = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert stopped.step == 20 and len(stopped.plan) >= 2  # a re-plan after the speed changed, before the stop
    monkeypatch.undo()
    clock = FakeClock(monkeypatch, 50.0, speed)
    no_thread_change()
    clock.steps, clock.evals = stopped.step, stopped.epoch  # the clock where the stopped run left it
    resumed = train(_budget_config(shapes, tmp_path / "resumed", resume="auto"))
    a, b = read_state_dict(straight / "checkpoints" / "last.pt"), read_state_dict(resumed / "checkpoints" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(resumed / "checkpoints" / "last.pt").plan == load_checkpoint(
        straight / "checkpoints" / "last.pt").plan  # fmt: skip


def test_the_progress_line_shows_the_planned_epochs_once_the_plan_is_made():
    """Under a budget the epoch count is unknown ("epoch 1/?") until the first steps are timed; then the bar's label
    and end follow the plan, in a log file's plain lines as on a terminal."""
    import io

    from alexnet.progress import progress

    log = io.StringIO()
    bar = progress(468, "epoch 1/?", unit="step", every_s=0.0, file=log)
    bar.update(1)
    bar.set_total(364, "epoch 1/2")
    bar.update(1)
    first, second = log.getvalue().splitlines()
    assert first.startswith("epoch 1/?: 1/468 step") and second.startswith("epoch 1/2: 2/364 step")


def test_no_flags_at_all_learns_a_small_set(tmp_path, final_checkpoint_only):
    """`alexnet train DATA` with nothing else on 3 classes x 40 images: the settings chosen from the data learn
    (before: batch 128 gave no full step per epoch). Threshold from measurement, with a margin."""
    from alexnet.data.synthetic import make_synthetic
    from alexnet.training import train

    data = make_synthetic(tmp_path / "d", classes=3, per_class=40, val_per_class=20, size=64, show_progress=False)
    run = train(resolve_config("fast", flags={"data": str(data), "out": str(tmp_path / "run"), "device": "cpu"}))
    report = json.loads((run / "eval.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert (config["batch_size"], config["image_size"], config["dropout"]) == (16, 64, 0.0)
    assert report["top1"] >= NO_FLAGS_TOP1, report["top1"]


NO_FLAGS_TOP1 = 0.45  # measured 60.0% (36 of 60; 55% on a harder draft of the data); chance is 33%


def test_the_cpu_path_is_cached_per_machine_size_and_batch_not_per_data_set(tmp_path, monkeypatch):
    """The measurement is keyed by CPU, torch, threads, architecture, image size and batch (it was per class count,
    so every new data set measured again), and skipped when it would take over 10% of a time budget."""
    import alexnet.training.cpu_path as C

    cache, calls, tried = str(tmp_path / "cpu-path.json"), [], []
    monkeypatch.setattr(C, "cpu_has_bf16", lambda: True)  # the same candidates on any CPU

    def measure(arch, size, batch, candidates, limit):
        calls.append((arch, size, batch))
        tried.append(candidates)
        return ("bf16", True), "", 0.0

    monkeypatch.setattr(C, "_measure_cpu_paths", measure)
    assert C.choose_cpu_path("alexnet", 64, 32, cache=cache, log=lambda s: None) == ("bf16", True)
    assert C.choose_cpu_path("alexnet", 64, 32, cache=cache, log=lambda s: None) == ("bf16", True)  # cached
    assert calls == [("alexnet", 64, 32)]
    C.choose_cpu_path("alexnet", 96, 32, cache=cache, log=lambda s: None)
    C.choose_cpu_path("alexnet", 64, 16, cache=cache, log=lambda s: None)
    assert calls[1:] == [("alexnet", 96, 32), ("alexnet", 64, 16)]
    assert tried[0] == [("fp32", False), ("bf16", True)]
    monkeypatch.setattr(C, "cpu_has_bf16", lambda: False)  # no bf16 units: fp32 with and without channels-last
    C.choose_cpu_path("alexnet", 64, 4, cache=cache, log=lambda s: None)
    assert tried[-1] == [("fp32", False), ("fp32", True)]
    monkeypatch.undo()
    monkeypatch.setattr(C, "cpu_has_bf16", lambda: True)
    said = []  # a 1-second budget: the first candidate's steps show the measurement cannot pay for itself
    assert C.choose_cpu_path("alexnet", 64, 8, cache=str(tmp_path / "other.json"), budget_seconds=1.0,
                             log=said.append) == ("fp32", False)  # fmt: skip
    assert said == ["CPU path not measured: it would take more than 10% of the time budget; fp32 (--precision and "
                    "--channels-last override)"], said  # fmt: skip


def test_bf16_is_taken_unless_fp32_measures_more_than_a_tenth_faster():
    """By hand, the measurement that trained a 5-minute run in fp32 on an AVX-512 BF16 CPU (fp32 455, bf16 449 img/s,
    both slowed; quiet, one path per process: 680 and 953): bf16 is taken. fp32 must beat it by more than 10%, and
    without bf16 units the faster fp32 layout wins outright."""
    from alexnet.training.cpu_path import BF16_EDGE, pick

    assert pick({("fp32", False): 455, ("bf16", True): 449}) == ("bf16", True)
    assert pick({("fp32", False): 449 * BF16_EDGE - 1, ("bf16", True): 449}) == ("bf16", True)
    assert pick({("fp32", False): 449 * BF16_EDGE + 1, ("bf16", True): 449}) == ("fp32", False)
    assert pick({("fp32", False): 680, ("bf16", True): 953}) == ("bf16", True)
    assert pick({("fp32", False): 310, ("fp32", True): 300}) == ("fp32", False)
    assert pick({("fp32", False): 300, ("fp32", True): 310}) == ("fp32", True)


def test_the_cpu_path_measurement_is_projected_from_a_steady_step_not_the_first():
    """By hand: a first candidate built and stepped twice in 1.9 s (a 1.3 s first step, then 0.4 s) projects
    1.9 + 0.4 x (2 x 3 + 3 x 3) = 7.9 s for three candidates: within 10% of a 150-s budget (15 s). The first step
    alone (x 4 steps x 3 candidates = 15.6 s) skipped it, and kept fp32 where bf16 ran 1.5x faster."""
    from alexnet.training.cpu_path import MEASURE_SHARE, measurement_seconds

    assert measurement_seconds(1.9, 0.4, 3) == pytest.approx(7.9)
    assert measurement_seconds(1.9, 0.4, 3) < MEASURE_SHARE * 150 < 1.3 * 4 * 3
    assert measurement_seconds(1.9, 0.4, 1) == pytest.approx(1.9 + 0.4 * 3)  # one candidate: its timed steps only


def test_under_a_busy_core_the_steps_move_to_the_threads_that_run_them_fastest(monkeypatch):
    """A simulated 2-core machine: 0.18 s per step on 2 threads when quiet, 0.69 s when a busy process holds one core,
    0.37 s on 1 thread either way. The thread count follows: 1 while the core is busy (tried again on 2 every
    PROBE_EVERY windows, and dropped), 2 once it is free; every change is said in one line."""
    from alexnet.training.budget import PROBE_EVERY, CpuThreads, threads_restored

    with threads_restored():
        torch.set_num_threads(2)
        lines, used = [], []
        tuner = CpuThreads(2, log=lines.append)
        busy = [False] * 2 + [True] * 10 + [False] * 8
        for loaded in busy:
            now = torch.get_num_threads()
            used.append(now)
            tuner.after_window(0.37 if now == 1 else 0.69 if loaded else 0.18)
        assert used[:3] == [2, 2, 2] and used[3] == 1  # slowed at window 3: 1 thread tried next
        assert used[4 : 4 + PROBE_EVERY] == [1] * PROBE_EVERY  # kept: 0.37 < 0.69
        assert 2 in used[4 + PROBE_EVERY : 12] and used[-3:] == [2, 2, 2]  # probed on 2 again; back for good when free
        assert lines[0] == "time budget: CPU threads trying 1 (steps at 0.690 s, fastest on 2: 0.180 s)"
        assert "time budget: 1 CPU thread(s) kept (0.370 s per step)" in lines
        assert lines[-1] == "time budget: 2 CPU thread(s) kept (0.180 s per step)"


def test_steps_gained_at_the_last_planned_step_continue_the_epoch(shapes, tmp_path, monkeypatch):
    """A run planned inside one epoch (a large data set, a slow or loaded machine) whose steps got faster: the
    re-plan at its last planned step was made after the epoch's validation, when the epoch was over, so the steps it
    added were never run (an 88-step plan ended at step 74, 62 s of 300 unused). Now the epoch goes on to the new
    end."""
    from alexnet.checkpoint import load as load_checkpoint
    from alexnet.training import train

    clock = FakeClock(monkeypatch, BUDGET_S, lambda n: 3.0 if n <= 25 else 1.5)  # faster after the first plan
    run = train(_budget_config(shapes, tmp_path / "run", batch_size=1, time_budget=f"{BUDGET_S}s"))  # 36 steps/epoch
    plan = load_checkpoint(run / "checkpoints" / "last.pt").plan
    records = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
    assert len(records) == 1 and len(plan) == 2 and plan[1][0] == plan[0][1] < plan[1][1] <= 36, plan  # the case
    assert records[0]["step"] == clock.steps == plan[1][1], (records, plan)  # the added steps were run


BUDGET_S = 95  # 25 timed steps of 3 s, a first plan ending 4 steps later (inside the 36-step epoch) at 1.5 s
