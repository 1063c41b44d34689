"""How fast the attribution methods are, and whether their maps mean anything. Prints tables, writes JSON.

    PYTHONPATH=src python benchmarks/explain_bench.py timing                   # one 224-px image, every method
    PYTHONPATH=src python benchmarks/explain_bench.py maps runs/demo           # pointing game + sanity check

JSON goes to ``runs/explain-timing.json`` / ``runs/explain-maps.json`` (``--json`` to change).

``timing``: torchvision's AlexNet (1000 classes; weights do not change the cost) on one 224-px image, every method
with its defaults (Grad-CAM at conv5; occlusion window 56 px, stride 28 px = 49 forward passes; integrated gradients
32 steps), plus a plain forward and a forward + backward as yardsticks, round-robin over ``--repeats`` rounds after
one warm-up round; medians, and each method's median over the forward + backward's.

``maps``: a run's best checkpoint on the val split of its synthetic data set (object boxes from ``boxes.json``; the
built-in set unless ``--data``), for every method: the pointing game (map maximum inside the object's box) against
the centre-point and random-point baselines and against each map scored on another image's box (the next val
image: same method, same biases, wrong image); the share of the map's positive mass inside the box, own image and
other image; the pointing game on fresh images whose box leaves out the crop centre (where the centre point scores
0); and the model-randomisation check of Adebayo et al. 2018 (classifier and conv5 re-initialised; the randomised
model's hit rate, and the Spearman rank correlation of its maps with the trained model's; pairs with a map constant
in either model are left out of the mean and counted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from alexnet.explain import (
    LAYERS,
    METHODS,
    attribute,
    default_layer,
)
from alexnet.explain_checks import (
    boxed_crops,
    centre_hits,
    mass_in_box,
    off_centre_images,
    pointing_hits,
    random_point_rate,
    randomised_copy,
    spearman,
)


def header() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"device: cpu ({torch.get_num_threads()} threads), torch {torch.__version__}, "
            f"{os.cpu_count()} cores, load average {load:.1f} at start")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# timing


def timing(repeats: int) -> dict:
    from alexnet.model import create_model

    head = header()
    torch.manual_seed(0)
    model = create_model("alexnet", num_classes=1000).eval()
    x = torch.randn(1, 3, 224, 224)
    target = torch.tensor([0])

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xg)[0, 0], xg)

    runs = {"forward": forward, "forward + backward": forward_backward}
    for m in METHODS:
        runs[m] = lambda m=m: attribute(model, x, target, method=m)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(repeats + 1):  # round 0 warms up (allocator, Captum imports) and is dropped
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t0)
    ref = statistics.median(times["forward + backward"])
    print(head)
    print(f"one 224-px image, 1000 classes, fp32; median of {repeats} rounds (round-robin, after one warm-up)")
    print(f"{'method':28} {'median s':>9} {'min s':>7} {'max s':>7} {'x fwd+bwd':>10}")
    print("-" * 65)
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = {"median_s": med, "min_s": min(ts), "max_s": max(ts), "ratio": med / ref}
        print(f"{name:28} {med:9.3f} {min(ts):7.3f} {max(ts):7.3f} {med / ref:9.1f}x")
    return {"kind": "timing", "header": head, "repeats": repeats, "rows": rows}


# ----------------------------------------------------------------------------------------------------------------
# do the maps mean anything?


def maps(run_dir: str, data: str | None, off_centre: int, batch: int, methods: list[str], limit: int | None) -> dict:
    import alexnet
    from alexnet.data.sources import open_dataset
    from alexnet.data.synthetic import default_synthetic, read_boxes

    head = header()
    predictor = alexnet.load(Path(run_dir) / "checkpoints" / "best.pt", device="cpu")
    model, pre = predictor.model, predictor.preprocess
    root = Path(data) if data else default_synthetic()
    val = open_dataset(str(root)).val
    if limit is not None:  # an evenly spaced subset: every class keeps its share
        from alexnet.data.split import Subset

        val = Subset(val, torch.linspace(0, len(val) - 1, min(limit, len(val))).round().long().tolist())
    crops, boxes = boxed_crops(val, read_boxes(root), pre)
    labels = torch.tensor([val.labels[i] for i in range(len(val))])
    extra_crops, extra_boxes, extra_names = off_centre_images(off_centre, pre, classes=len(val.classes))
    extra_labels = torch.tensor([val.classes.index(n) for n in extra_names])
    size = pre.crop
    random_model = randomised_copy(model, ("classifier", "conv5"), seed=0)

    def run(
        net, c: torch.Tensor, t: torch.Tensor | None, method: str, layer: str | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, preds = [], []
        for s in range(0, len(c), batch):
            x = pre.normalize(c[s : s + batch])
            with torch.no_grad():
                p = net(x).argmax(1)
            preds.append(p)
            out.append(attribute(net, x, p if t is None else t[s : s + batch], method=method, layer=layer))
        return torch.cat(out), torch.cat(preds)

    print(head)
    print(f"model {run_dir} ({predictor.info.arch}, {size} px crops); val {root}: {len(val)} images; "
          f"{len(extra_crops)} fresh off-centre images (seed 1)")  # fmt: skip

    def accuracy(c: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            pred = torch.cat([model(pre.normalize(c[s : s + batch])).argmax(1) for s in range(0, len(c), batch)])
        return float((pred == y).float().mean())

    top1, top1_off = accuracy(crops, labels), accuracy(extra_crops, extra_labels)
    centre, rand = float(centre_hits(boxes, size).float().mean()), float(random_point_rate(boxes, size).mean())
    rand_off = float(random_point_rate(extra_boxes, size).mean())
    print(f"val top-1 {100 * top1:.1f}%; baselines on val: centre point {100 * centre:.1f}%, random point "
          f"{100 * rand:.1f}% (the crop's mean share inside the box); off-centre set: top-1 {100 * top1_off:.1f}%, "
          f"centre 0%, random point {100 * rand_off:.1f}%; Grad-CAM's default layer at {size} px: "
          f"{default_layer(model, size)}")  # fmt: skip
    settings = [("gradcam", layer) for layer in LAYERS if "gradcam" in methods]
    settings += [(m, None) for m in METHODS if m in methods and m != "gradcam"]
    print(f"{'method':22} {'layer':6} {'hit':>6} {'other':>6} {'mass':>6} {'other':>6} {'off-ctr':>8} "
          f"{'rand hit':>9} {'rho mean':>9} {'rho med':>8} {'const':>6} {'s':>6}")  # fmt: skip
    print("-" * 107)
    rows = []
    for method, layer in settings:
        t0 = time.perf_counter()
        trained, pred = run(model, crops, None, method, layer)
        # the randomised model explains the same classes as the trained one (Adebayo et al.: same target)
        randomised, _ = run(random_model, crops, pred, method, layer)
        off, _ = run(model, extra_crops, None, method, layer)
        hits = pointing_hits(trained, boxes).float().mean()
        mass = mass_in_box(trained, boxes).nanmean()
        other = trained.roll(1, 0)  # each image gets the previous image's map
        other_hits, other_mass = pointing_hits(other, boxes).float().mean(), mass_in_box(other, boxes).nanmean()
        off_hits = pointing_hits(off, extra_boxes).float().mean()
        rand_hits = pointing_hits(randomised, boxes).float().mean()
        rho = spearman(trained, randomised)
        row = {"method": method, "layer": layer if method == "gradcam" else None, "hit": float(hits),
               "other_image_hit": float(other_hits), "mass_in_box": float(mass),
               "other_image_mass_in_box": float(other_mass), "off_centre_hit": float(off_hits),
               "randomised_hit": float(rand_hits), "spearman_mean": float(rho.nanmean()),
               "spearman_median": float(rho.nanmedian()), "constant_maps": int(rho.isnan().sum()),
               "seconds": time.perf_counter() - t0}  # fmt: skip
        rows.append(row)
        print(f"{method:22} {layer if method == 'gradcam' else '':6} {100 * row['hit']:5.1f}% "
              f"{100 * row['other_image_hit']:5.1f}% {100 * row['mass_in_box']:5.1f}% "
              f"{100 * row['other_image_mass_in_box']:5.1f}% "
              f"{100 * row['off_centre_hit']:7.1f}% {100 * row['randomised_hit']:8.1f}% {row['spearman_mean']:9.3f} "
              f"{row['spearman_median']:8.3f} {row['constant_maps']:6d} {row['seconds']:6.0f}")  # fmt: skip
    print("hit: map maximum inside the box (val); mass: share of the positive map inside the box; other: the same with "
          "the map of another val image (the previous one); off-ctr: hit on the off-centre set; "
          "rand hit / rho: maps of the model with classifier + conv5 re-initialised, and their Spearman correlation "
          "with the trained model's (const: pairs left out, a map constant in one of the models)")  # fmt: skip
    return {"kind": "maps", "header": head, "run": run_dir, "data": str(root), "val_images": len(val),
            "off_centre_images": len(extra_crops), "top1": top1, "off_centre_top1": top1_off,
            "default_layer": default_layer(model, size), "centre_point": centre, "random_point": rand,
            "off_centre_random_point": rand_off,
            "rows": rows}  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("timing", help="seconds per method for one 224-px image")
    t.add_argument("--repeats", type=int, default=5, help="timed rounds")
    m = sub.add_parser("maps", help="pointing game and model-randomisation check on a run")
    m.add_argument("run_dir", help="a run directory trained on synthetic data (checkpoints/best.pt)")
    m.add_argument("--data", default=None, help="the synthetic data set (default: the built-in one)")
    m.add_argument("--off-centre", type=int, default=200, help="fresh images whose box leaves out the crop centre")
    m.add_argument("--batch-size", type=int, default=50, help="images per attribution call")
    m.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to measure")
    m.add_argument("--limit", type=int, default=None, help="evenly spaced val images to use (default: all)")
    for p in (t, m):
        p.add_argument("--json", default=None, help="JSON output (default: runs/explain-timing.json or -maps.json)")
    args = parser.parse_args(argv)
    if args.what == "timing":
        result = timing(args.repeats)
    else:
        result = maps(args.run_dir, args.data, args.off_centre, args.batch_size, args.methods, args.limit)
    path = Path(args.json or f"runs/explain-{args.what}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
