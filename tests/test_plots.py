"""fc7 neighbour search against brute force, and every PNG of ``alexnet plot`` at its expected pixel size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.errors import UserError
from alexnet.plots import nearest_neighbours
from alexnet.plotting import SIZES, filter_grid, top_confusions


def test_nearest_neighbours_on_a_hand_made_case():
    # points on a line: distances from 2.1 are 2.1, 1.1, 0.9, 3.9, 7.9 -> order 2, 1, 0, 3, 4
    keys = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [6.0, 0.0], [10.0, 0.0]])
    queries = torch.tensor([[2.1, 0.0], [9.0, 1.0]])
    for chunk in (1, 2, 3, 100):  # results must not depend on how the keys are chunked
        d, i = nearest_neighbours(queries, keys, 3, chunk_size=chunk)
        assert i.tolist() == [[2, 1, 0], [4, 3, 2]]
        torch.testing.assert_close(d[0], torch.tensor([0.9, 1.1, 2.1]))
        torch.testing.assert_close(d[1], torch.tensor([2**0.5, 10**0.5, 37**0.5]))


def test_nearest_neighbours_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    keys, queries = torch.randn(300, 32, generator=g), torch.randn(9, 32, generator=g)
    full = ((queries[:, None, :] - keys[None, :, :]) ** 2).sum(-1).sqrt()  # (9, 300) brute force
    expected_d, expected_i = full.sort(dim=1)
    d, i = nearest_neighbours(queries, keys, 6, chunk_size=37)
    assert torch.equal(i, expected_i[:, :6])
    torch.testing.assert_close(d, expected_d[:, :6])
    with pytest.raises(ValueError):
        nearest_neighbours(queries, keys[:3], 6)


def test_filter_grid_normalises_each_kernel():
    w = torch.zeros(3, 3, 2, 2)
    w[0, 0, 0, 0], w[1] = 5.0, -1.0  # kernel 1 is constant: no division by zero
    w[2] = torch.arange(12.0).view(3, 2, 2)
    grid = filter_grid(w, cols=2, pad=1)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1, 3)
    k0 = grid[1:3, 1:3]  # kernel 0: one 5 among zeros -> one 1.0, the rest 0.0
    assert k0.max() == 1.0 and (k0 == 0).sum() == 11
    k2 = grid[4:6, 1:3]  # kernel 2: min 0 -> 0, max 11 -> 1
    np.testing.assert_allclose(k2[..., 0], np.array([[0, 1], [2, 3]]) / 11)
    assert np.all(grid[0] == 1.0)  # white padding


def test_top_confusions():
    cm = np.array([[5, 2, 0], [7, 1, 1], [0, 3, 9]])
    assert top_confusions(cm, ["a", "b", "c"], n=2) == [("b", "a", 7), ("c", "b", 3)]


def make_run(run_dir, data, arch: str, classes: list[str], preprocess: dict | None = None) -> None:
    """A run directory by hand: checkpoint, metrics.jsonl with step and epoch lines, eval.json."""
    from alexnet.checkpoint import save_payload
    from alexnet.model import create_model

    torch.manual_seed(0)
    model = create_model(arch, num_classes=len(classes), init="kaiming")
    pre = preprocess or {"resize": 64, "crop": 64, "mean": [0.5] * 3, "std": [0.25] * 3}
    payload = {"arch": arch, "num_classes": len(classes), "model": model.state_dict(), "classes": classes,
               "preprocess": pre, "config": {"data": str(data)}}  # fmt: skip
    save_payload(payload, run_dir / "checkpoints" / "best.pt")
    lines = []
    for e in range(1, 4):
        lines.append({"kind": "step", "epoch": e, "step": 10 * e - 5, "train_loss": 2.0 / e, "lr": 0.01,
                      "img_per_s": 100.0, "time": e})  # fmt: skip
        lines.append({"kind": "epoch", "epoch": e, "step": 10 * e, "train_loss": 2.0 / e, "val_loss": 2.2 / e,
                      "val_top1": 0.2 * e, "val_top5": 0.3 * e, "lr": 0.01 / e, "img_per_s": 100.0 + e,
                      "time": 2.0 * e})  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n{torn")
    n = len(classes)
    cm = (np.eye(n, dtype=int) * 5 + 1).tolist()
    report = {"top1": 0.5, "top5": 0.9, "loss": 1.0, "classes": classes, "per_class": dict.fromkeys(classes, 0.5),
              "confusion": cm}  # fmt: skip
    (run_dir / "eval.json").write_text(json.dumps(report))


def test_a_short_real_run_with_plots_writes_every_png(tmp_path):
    """``alexnet train --plots`` path: a 2-epoch run on tiny synthetic data, then each PNG at its fixed size."""
    pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'alexnet[plots]'")
    from PIL import Image

    from alexnet.config import resolve_config
    from alexnet.data.synthetic import make_synthetic
    from alexnet.training import train

    data = make_synthetic(tmp_path / "data", classes=3, per_class=6, val_per_class=2, size=64)
    for split in ("train", "val"):  # files training skips: the plots skip them too (they stopped on the first one)
        (data / split / "circle" / "bad_1.jpg").write_bytes(b"")
    flags = dict(data=str(data), out=str(tmp_path / "run"), epochs=2, batch_size=6, image_size=64, resize_size=72,
                 workers=0, max_steps_per_epoch=2, log_every=1, device="cpu", precision="fp32", plots=True,
                 max_bad_fraction=0.2)  # fmt: skip
    run = train(resolve_config("fast", flags=flags))
    for name, size in SIZES.items():
        with Image.open(run / "plots" / f"{name}.png") as im:
            assert im.size == size, name


def test_plot_cli_on_a_hand_made_alexnet2012_run(tmp_path, capsys):
    arch = "alexnet2012"  # the two-group filter figure; the real run above covers torchvision's alexnet
    pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'alexnet[plots]'")
    from PIL import Image

    from alexnet.cli import main
    from alexnet.data.synthetic import make_synthetic

    data = tmp_path / "data"
    make_synthetic(data, classes=3, per_class=4, val_per_class=2, size=64, seed=0)
    run = tmp_path / "run"
    classes = sorted(p.name for p in (data / "train").iterdir())
    make_run(run, data, arch, classes)
    assert main(["plot", str(run), "--device", "cpu"]) == 0
    written = [line.removeprefix("wrote ") for line in capsys.readouterr().out.splitlines()]
    names = {name: run / "plots" / f"{name}.png" for name in SIZES}
    assert sorted(written) == sorted(str(p) for p in names.values())
    for name, path in names.items():
        with Image.open(path) as im:
            assert im.size == SIZES[name], name
    # a second plot into the same folder is refused before any work (as features and export refuse), unless asked
    before = {p: p.stat().st_mtime_ns for p in names.values()}
    assert main(["plot", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{names['curves']} and " in err and "already exist; pass --overwrite to replace" in err
    assert {p: p.stat().st_mtime_ns for p in names.values()} == before
    assert main(["plot", str(run), "--device", "cpu", "--overwrite"]) == 0
    assert all(p.stat().st_mtime_ns > before[p] for p in names.values())
    # a wrong --data is refused before any figure is written (curves, filters and confusion were, then it failed)
    assert (
        main(["plot", str(run), "--device", "cpu", "--data", str(tmp_path / "nosuch"), "--out", str(tmp_path / "p")])
        == 2
    )
    assert "nosuch: no such file or folder" in capsys.readouterr().err and not list((tmp_path / "p").glob("*.png"))
    assert main(["plot", str(names["curves"])]) == 2  # a file given for the run folder: said so
    assert "curves.png: a file; give the run's folder" in capsys.readouterr().err


def test_plot_refuses_data_whose_classes_the_model_does_not_predict(tmp_path, capsys):
    """As ``alexnet evaluate`` does: with other class names every prediction was drawn red, and plot exited 0."""
    pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'alexnet[plots]'")
    from alexnet.cli import main
    from alexnet.data.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "data", classes=2, per_class=1, val_per_class=1, size=64, seed=0)
    data_classes = sorted(p.name for p in (data / "val").iterdir())
    run = tmp_path / "run"
    make_run(run, data, "alexnet", ["cat", "dog"])
    assert main(["plot", str(run), "--device", "cpu", "--data", str(data), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert all(repr(c) in err for c in [*data_classes, "cat", "dog"]) and "give --data a data set" in err
    assert not list((tmp_path / "p").glob("*.png"))


def test_plots_skip_the_images_training_skipped(tmp_path, capsys):
    """``make_plots`` (what ``train --plots`` calls) on data with unreadable files in both splits: every figure,
    each bad file named once (bounded), no stop on the first one."""
    pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'alexnet[plots]'")
    from alexnet.data.loading.skipped import WARN_FIRST
    from alexnet.data.synthetic import make_synthetic
    from alexnet.plots import make_plots

    data = make_synthetic(tmp_path / "data", classes=3, per_class=4, val_per_class=3, size=64, seed=0)
    for i in range(WARN_FIRST + 2):
        (data / "train" / "circle" / f"bad_{i}.jpg").write_bytes(b"")
    (data / "val" / "ring" / "bad_val.png").write_bytes(b"\x89PNG not really")
    run = tmp_path / "run"
    make_run(run, data, "alexnet", sorted(p.name for p in (data / "train").iterdir()))
    written = make_plots(run, device="cpu")
    assert sorted(p.name for p in written) == sorted(f"{name}.png" for name in SIZES)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: skipped")]
    assert len(lines) == 2  # training named each file already: one count per split
    assert f"skipped {WARN_FIRST + 2} unreadable images in {data}/train (train)" in lines[0]
    assert f"skipped 1 unreadable image in {data}/val (val), 1 of 10 in all" in lines[1]


def test_confusion_with_many_classes_and_missing_run(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'alexnet[plots]'")
    from PIL import Image

    from alexnet.plots import make_plots, plot_confusion

    n = 150  # above NAMED_CLASSES_MAX: names dropped, top confusions listed
    cm = np.eye(n, dtype=int) * 10
    cm[3, 7] = 4
    report = {"classes": [f"class{i}" for i in range(n)], "confusion": cm.tolist(), "top1": 0.9}
    out = plot_confusion(report, tmp_path / "c.png")
    with Image.open(out) as im:
        assert im.size == SIZES["confusion"]
    with pytest.raises(UserError, match="no such run directory"):
        make_plots(tmp_path / "nope")
    with pytest.raises(UserError, match="checkpoints"):
        make_plots(tmp_path)


def test_class_names_are_drawn_literally_not_as_mathtext(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'alexnet[plots]'")
    from alexnet.plots import plot_confusion

    names = ["$\\notacommand{$", "a$b", "plain"]  # mathtext would fail to parse the first
    report = {"classes": names, "confusion": [[3, 1, 0], [0, 4, 0], [1, 0, 2]], "top1": 0.75}
    assert plot_confusion(report, tmp_path / "c.png").is_file()


def test_characters_no_font_has_are_one_line_not_a_warning_per_glyph(tmp_path, capsys, monkeypatch, recwarn):
    pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'alexnet[plots]'")
    from alexnet import plotting
    from alexnet.plots import plot_confusion

    monkeypatch.setattr(plotting, "_said_missing_glyphs", False, raising=False)
    # STIXGeneral comes with matplotlib: it has Ⓐ, which DejaVu Sans lacks, and no Chinese
    monkeypatch.setattr(plotting, "FALLBACK_FONTS", ("No Such Font", "STIXGeneral"), raising=False)
    report = {"classes": ["日本", "Ⓐ", "plain"], "confusion": [[3, 1, 0], [0, 4, 0], [1, 0, 2]], "top1": 0.75}
    for name in ("a.png", "b.png"):
        plot_confusion(report, tmp_path / name)
    assert not [w for w in recwarn if "Glyph" in str(w.message)]  # matplotlib's, with its source line, per glyph
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "characters 日 (U+65E5), 本 (U+672C): " in err[0] and "fonts-noto-cjk" in err[0], err


# ----------------------------------------------------------------------------------------------------------------
# attribution maps: the overlay, the Grad-CAM grid and the unit view show what they claim to


def png_region(png: np.ndarray, ax, inset: int = 2) -> np.ndarray:
    """The pixels of a saved figure inside ``ax`` (display coordinates, origin bottom-left), the frame left out."""
    box = ax.get_window_extent()
    h = png.shape[0]
    x0, x1 = int(np.ceil(box.x0)) + inset, int(np.floor(box.x1)) - inset
    y0, y1 = int(np.ceil(h - box.y1)) + inset, int(np.floor(h - box.y0)) - inset
    return png[y0:y1, x0:x1, :3].astype(np.float32) / 255


def shrink(region: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``region`` (H, W, 3) in [0, 1] averaged down to ``size`` = (h, w) pixels, as the figure drew them larger."""
    from PIL import Image

    img = Image.fromarray((region * 255).round().astype(np.uint8))
    return np.asarray(img.resize((size[1], size[0]), Image.BOX), dtype=np.float32) / 255


def test_overlay_puts_heat_where_the_map_is_and_nowhere_else():
    pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'alexnet[plots]'")
    import matplotlib

    from alexnet.plotting import HEAT_ALPHA, HEAT_CMAP, overlay

    crop = torch.full((3, 20, 20), 128, dtype=torch.uint8)
    amap = torch.zeros(20, 20)
    amap[5, 7] = 4.0
    amap[10:12, 10:12] = 2.0
    amap[0, 0] = -3.0  # negative evidence is not drawn as heat
    out = overlay(crop, amap)
    img = 128 / 255
    untouched = amap <= 0
    np.testing.assert_allclose(out[untouched.numpy()], img, atol=1e-6)  # the image unchanged where the map is 0
    top = np.asarray(matplotlib.colormaps[HEAT_CMAP](1.0)[:3])
    np.testing.assert_allclose(out[5, 7], (1 - HEAT_ALPHA) * img + HEAT_ALPHA * top, atol=1e-6)
    half = np.asarray(matplotlib.colormaps[HEAT_CMAP](0.5)[:3])
    np.testing.assert_allclose(out[10, 10], (1 - HEAT_ALPHA / 2) * img + HEAT_ALPHA / 2 * half, atol=1e-6)
    np.testing.assert_allclose(overlay(crop, torch.zeros(20, 20)), img, atol=1e-6)  # no map, no heat


def test_gradcam_grid_shows_each_cells_map_with_right_and_wrong_apart(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'alexnet[plots]'")
    from PIL import Image

    import alexnet
    from alexnet.data.sources import open_dataset
    from alexnet.data.synthetic import make_synthetic
    from alexnet.map_plots import _gradcam_figure
    from alexnet.plotting import heat, overlay, save

    data = make_synthetic(tmp_path / "data", classes=3, per_class=1, val_per_class=8, size=64, show_progress=False)
    make_run(tmp_path / "run", data, "alexnet", ["circle", "ring", "square"])
    predictor = alexnet.load(tmp_path / "run" / "checkpoints" / "best.pt", device="cpu")
    val = open_dataset(str(data)).val
    fig, cells = _gradcam_figure(predictor, val)
    width = fig.get_figwidth() * fig.dpi
    png = np.asarray(Image.open(save(fig, tmp_path / "g.png")).convert("RGB"))
    assert any(c["correct"] for c in cells) and any(not c["correct"] for c in cells)  # an untrained model: both
    preds = predictor.predict([val.describe(c["index"]) for c in cells], topk=1)
    for cell, top in zip(cells, preds):
        assert cell["predicted"] == top[0][0]  # the grid's predictions are the predictor's
        assert cell["correct"] == (cell["true"] == cell["predicted"])
        centre_x = (cell["ax"].get_window_extent().x0 + cell["ax"].get_window_extent().x1) / 2
        assert (centre_x < width / 2) == cell["correct"]  # right predictions on the left, wrong on the right
        shown = shrink(png_region(png, cell["ax"]), (64, 64))
        assert np.abs(shown - overlay(cell["crop"], cell["map"])).mean() < 0.03  # the cell draws this map
        plain = cell["crop"].permute(1, 2, 0).numpy() / 255
        change = np.abs(shown - plain).sum(-1)  # how far the drawn cell is from the bare image, per pixel
        h = heat(cell["map"])
        assert h.std() > 0.05  # the map varies across the image...
        assert np.corrcoef(change.ravel(), h.ravel())[0, 1] > 0.5  # ...and the colour changes where it is high


def test_unit_view_patches_are_the_receptive_fields_of_the_top_val_crops(tmp_path):
    """At 224 px conv5's field (163 px) is a real part of the crop: each patch must be that part of the named val
    image, at the unit's strongest position, for the 9 val images where the unit is strongest."""
    pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'alexnet[plots]'")
    from PIL import Image

    import alexnet
    from alexnet.data.sources import open_dataset
    from alexnet.data.synthetic import make_synthetic
    from alexnet.map_plots import _units_figure
    from alexnet.plotting import save

    data = make_synthetic(tmp_path / "data", classes=2, per_class=1, val_per_class=6, size=224, show_progress=False)
    classes = ["circle", "ring"]
    make_run(tmp_path / "run", data, "alexnet", classes, preprocess={"resize": 224, "crop": 224,
                                                                     "mean": [0.5] * 3, "std": [0.25] * 3})  # fmt: skip
    predictor = alexnet.load(tmp_path / "run" / "checkpoints" / "best.pt", device="cpu")
    val = open_dataset(str(data)).val
    fig, cells, searched = _units_figure(predictor, val, units=3, per_unit=4, pool=9)  # 9 of the 12 val images
    png = np.asarray(Image.open(save(fig, tmp_path / "u.png")).convert("RGB"))
    assert len(searched) == 9 and searched != list(range(9))
    # conv5 after its ReLU, by hand: features[:12] of torchvision's layout, (N, 256, 13, 13)
    crops = torch.stack([predictor.transform(val.load(i)) for i in searched])
    with torch.no_grad():
        acts = predictor.model.features[:12](predictor.preprocess.normalize(crops))
    units = sorted({c["unit"] for c in cells})
    assert len(units) == 3
    for unit in units:
        mine = [c for c in cells if c["unit"] == unit]
        best = acts[:, unit].flatten(1).max(1)
        assert [c["index"] for c in mine] == [searched[i] for i in best.values.topk(4).indices]  # strongest first
        for c in mine:
            r, col = divmod(int(best.indices[searched.index(c["index"])]), 13)
            # conv5 position i sees input px 16 i - 66 .. 16 i + 96 (163 px), clipped to the crop
            expected = (max(16 * col - 66, 0), max(16 * r - 66, 0), min(16 * col + 97, 224), min(16 * r + 97, 224))
            assert c["box"] == expected
            x0, y0, x1, y1 = expected
            patch = predictor.transform(val.load(c["index"]))[:, y0:y1, x0:x1]
            assert torch.equal(c["patch"], patch)  # a crop of that val image...
            assert Path(val.describe(c["index"])).name in c["ax"].get_title()  # ...named in its title...
            shown = shrink(png_region(png, c["ax"], inset=1), (y1 - y0, x1 - x0))
            assert np.abs(shown - patch.permute(1, 2, 0).numpy() / 255).mean() < 0.03  # ...and drawn


def test_one_channel_images_are_drawn_in_gray_without_stretching():
    """Grayscale (medical) images were drawn with matplotlib's default colour map, viridis, their contrast
    stretched to their own min..max; the overlay panel beside them was gray."""
    from alexnet.plotting import imshow_image, pyplot

    plt = pyplot()
    fig = plt.figure()
    img = torch.linspace(0.0, 0.5, 16).view(1, 4, 4)  # a dark image: must stay dark
    imshow_image(fig.add_subplot(), img)
    shown = fig.axes[0].images[0]
    rgba = shown.to_rgba(shown.get_array())
    plt.close(fig)
    assert np.allclose(rgba[..., 0], rgba[..., 1]) and np.allclose(rgba[..., 1], rgba[..., 2])
    assert np.allclose(rgba[..., 0], img[0].numpy(), atol=1 / 255)


@pytest.mark.parametrize("channels", [1, 3])
def test_uint8_crops_are_drawn_with_their_own_gray_levels(channels):
    """Every plot draws uint8 crops (0..255): a one-channel crop was drawn on a 0..1 scale, so neighbours.png,
    predictions.png, units.png and explain's input panel of a grayscale model were white wherever a pixel was not 0."""
    from alexnet.plotting import imshow_image, pyplot

    plt = pyplot()
    fig = plt.figure(figsize=(2, 2), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ramp = torch.arange(0, 256, 32, dtype=torch.uint8).repeat_interleave(8)  # 8 steps of 32, 64 px wide
    img = ramp.view(1, 1, 64).expand(channels, 64, 64).contiguous()
    imshow_image(ax, img, interpolation="nearest")
    fig.canvas.draw()
    png = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float32)
    plt.close(fig)
    row = png[png.shape[0] // 2]  # (200, 3): the ramp drawn across the figure
    assert np.allclose(row[:, 0], row[:, 2], atol=1) and np.allclose(row[:, 0], row[:, 1], atol=1)  # gray
    expected = ramp.float().numpy()[(np.arange(len(row)) * 64) // len(row)]
    assert np.abs(row[:, 0] - expected).max() <= 2  # the crop's levels, not black and white


@pytest.mark.parametrize(
    "classes, shown", [(3, ["val top1"]), (6, ["val top1", "val top5"]), (None, ["val top1", "val top5"])]
)
def test_curves_leave_out_top5_for_five_classes_or_fewer(tmp_path, monkeypatch, classes, shown):
    # with 5 classes or fewer top-5 is 100% throughout: a flat line at the top that says nothing
    import alexnet.plots as plots

    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, out: figures.append(fig) or out)
    rows = [{"kind": "epoch", "epoch": e, "val_top1": 0.5, "val_top5": 1.0, "train_loss": 1.0} for e in (1, 2)]
    plots.plot_curves(rows, tmp_path / "curves.png", num_classes=classes)
    assert figures[0].axes[1].get_legend_handles_labels()[1] == shown
