"""--in-channels 1: single-channel models (RGB weights adapted as timm's adapt_input_conv), single-channel in-memory
sets and loaders, preprocessing that carries channels and window, chosen from the data when every image is gray."""

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.errors import UserError
from alexnet.model import adapt_input_conv, create_model
from alexnet.preprocess import Preprocess, match_channels


def test_rgb_weights_summed_give_the_rgb_model_on_gray_images(tmp_path):
    """A gray image x through the adapted 1-channel model = the RGB image (x, x, x) through the RGB model."""
    from alexnet.config import TrainConfig
    from alexnet.training.step import build_model

    torch.manual_seed(0)
    rgb = create_model("alexnet", num_classes=5, init="kaiming").eval()
    torch.save(rgb.state_dict(), tmp_path / "rgb.pth")
    gray = build_model(TrainConfig(init_weights=str(tmp_path / "rgb.pth"), in_channels=1, dropout=0.0), 5).eval()
    assert gray.features[0].weight.shape == (64, 1, 11, 11)
    torch.testing.assert_close(gray.features[0].weight, rgb.features[0].weight.sum(1, keepdim=True))
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(gray.features(x), rgb.features(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)
    assert adapt_input_conv(rgb.features[0].weight, 3) is rgb.features[0].weight
    with pytest.raises(ValueError):
        adapt_input_conv(torch.zeros(64, 2, 11, 11), 1)


@pytest.mark.parametrize(
    ("arch", "init"), [("alexnet", "kaiming"), ("alexnet", "torchvision"), ("alexnet2012", "paper")]
)
def test_one_channel_model_starts_as_the_rgb_model_summed(arch, init):
    """Same seed: conv1 is the RGB model's summed over R, G, B (He-normal's fan-out would draw it sqrt(3) x smaller),
    every other tensor and the random stream after it are the RGB model's."""
    torch.manual_seed(0)
    rgb, after_rgb = create_model(arch, num_classes=5, init=init).state_dict(), torch.rand(4)
    torch.manual_seed(0)
    gray, after_gray = create_model(arch, num_classes=5, init=init, in_channels=1).state_dict(), torch.rand(4)
    assert gray["features.0.weight"].shape[1] == 1 and torch.equal(after_gray, after_rgb)
    assert torch.equal(gray.pop("features.0.weight"), adapt_input_conv(rgb.pop("features.0.weight"), 1))
    assert all(torch.equal(gray[k], rgb[k]) for k in rgb)


@pytest.mark.parametrize("freeze", ["none", "features"])
def test_one_channel_conv1_follows_the_rgb_model_on_gray_images(freeze):
    """SGD with momentum, Nesterov and weight decay (build_optimizer, lr set per group as training does): the 1-channel
    model's conv1 stays the RGB model's conv1 summed over R, G, B, step after step, and the logits agree."""
    from alexnet.config import TrainConfig
    from alexnet.training.step import build_optimizer

    torch.manual_seed(0)
    rgb = create_model("alexnet", num_classes=5, dropout=0.0, init="kaiming")
    gray = create_model("alexnet", num_classes=5, dropout=0.0, in_channels=1)
    gray.load_state_dict({**rgb.state_dict(), "features.0.weight": adapt_input_conv(rgb.features[0].weight, 1)})
    for m in (rgb, gray):
        m.freeze(freeze)
    start = gray.features[0].weight.detach().clone()
    cfg = TrainConfig(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, head_lr_mult=10.0)
    opts = [build_optimizer(cfg, m, torch.device("cpu")) for m in (rgb, gray)]
    for step in range(4):
        x, y = torch.rand(4, 1, 64, 64), torch.randint(0, 5, (4,))
        for m, opt, inp in ((rgb, opts[0], x.expand(-1, 3, -1, -1)), (gray, opts[1], x)):
            for g in opt.param_groups:
                g["lr"] = cfg.lr * (step + 1) / 4 * g["lr_mult"]  # a warm-up, as train_one_epoch sets it
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(inp), y).backward()
            opt.step()
    summed = rgb.features[0].weight.detach().sum(1, keepdim=True)
    assert ((summed - start).abs().max() > 0.05) == (freeze == "none")  # conv1 trained, or frozen
    torch.testing.assert_close(gray.features[0].weight.detach(), summed, rtol=1e-4, atol=1e-6)
    x = torch.rand(3, 1, 64, 64)
    torch.testing.assert_close(gray(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)


def test_preprocess_carries_channels_and_window():
    p = Preprocess.for_crop(64, mean=[0.3], std=[0.2], channels=1, window="lung")
    d = p.to_dict()
    assert d["channels"] == 1 and d["window"] == "lung"
    assert Preprocess.from_dict(json.loads(json.dumps(d))) == p
    old = {"crop": 64, "resize": 73, "mean": [0.5] * 3, "std": [0.2] * 3}  # written before the two fields
    q = Preprocess.from_dict(old)
    assert (q.channels, q.window) == (3, "auto")
    for bad in ({**d, "channels": 2}, {**d, "mean": [0.1] * 3}, {**d, "window": "lungs"}, {**old, "channels": 1}):
        with pytest.raises(UserError):
            Preprocess.from_dict(bad)


def test_colour_to_gray_is_pillow_luma():
    a = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    want = np.asarray(Image.fromarray(a).convert("L"))
    t = torch.from_numpy(a).permute(2, 0, 1).contiguous()
    assert np.abs(match_channels(t, 1)[0].numpy().astype(int) - want).max() <= 1
    assert match_channels(match_channels(t, 1), 3).shape == (3, 9, 7)


def test_gray_stats_from_rgb_statistics():
    from alexnet.data.pipeline import gray_stats

    # gray data: R = G = B = x with mean 0.4 and std 0.1 -> covariance 0.01 in every entry: one eigenvalue 0.03 along
    # (1, 1, 1)/sqrt(3); luma weights sum to 1, so the luma is x itself
    v = np.ones(3) / np.sqrt(3)
    vecs = np.stack([v, [1 / np.sqrt(2), -1 / np.sqrt(2), 0], [1 / np.sqrt(6), 1 / np.sqrt(6), -2 / np.sqrt(6)]], 1)
    g = gray_stats({"mean": [0.4] * 3, "std": [0.1] * 3, "eigvals": [0.03, 0.0, 0.0], "eigvecs": vecs.tolist()})
    assert g["mean"] == pytest.approx([0.4]) and g["std"] == pytest.approx([0.1])


def _gray_set(root, n=4, size=48):
    """Two classes of 16-bit gray PNGs (12-bit values: dark under the auto window's full 16-bit range)."""
    rng = np.random.default_rng(0)
    for split, k in (("train", n), ("val", 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(k):
                level = 1000 if c == "a" else 3000
                a = np.clip(rng.normal(level, 300, (size, size)), 0, 4095).astype(np.uint16)
                Image.fromarray(a).save(root / split / c / f"{i}.png")
    return root


def test_memory_and_folder_loaders_hold_one_channel(tmp_path):
    from alexnet.data.loading import make_loader
    from alexnet.data.loading.memory import load_into_memory
    from alexnet.data.sources import open_dataset

    ds = open_dataset(str(_gray_set(tmp_path)))
    p = Preprocess.for_crop(64, mean=[0.5], std=[0.25], channels=1)
    folder = make_loader(ds.train, p, batch_size=4, train=True, pca={"eigvals": [1] * 3, "eigvecs": np.eye(3)},
                         pca_std=0.1, workers=0)  # fmt: skip
    x, _ = next(iter(folder))
    assert x.shape == (4, 1, 64, 64)
    mem, _ = load_into_memory(ds.train, 73)
    assert mem.images.shape == (8, 73, 73, 1) and mem.images.nbytes == 8 * 73 * 73  # a third of RGB's
    for preset in ("paper", "torchvision"):
        x, _ = next(iter(make_loader(mem, p, batch_size=4, train=True, preset=preset)))
        assert x.shape == (4, 1, 64, 64)
    x, _ = next(iter(make_loader(mem, p, batch_size=2, ten_crop=True)))
    assert x.shape == (2, 10, 1, 64, 64)


@pytest.mark.parametrize("in_memory", [True, False])
def test_one_channel_batches_are_the_rgb_runs_first_channel_colour_noise_included(tmp_path, in_memory):
    """On gray data a 1-channel run gets the batches (crops, flips and the luma of the paper's PCA colour noise, a
    brightness shift) that an RGB run gets, channel for channel."""
    from alexnet.config import TrainConfig
    from alexnet.data.pipeline import build_data, open_training_data

    data = _gray_set(tmp_path)
    batches = {}
    for channels, pca_std in ((3, 0.1), (1, 0.1), (1, 0.0)):
        cfg = TrainConfig(data=str(data), in_channels=channels, image_size=64, batch_size=4, workers=0,
                          in_memory=in_memory, pca_std=pca_std)  # fmt: skip
        bundle = build_data(cfg, open_training_data(cfg, log=print), device=torch.device("cpu"), log=print)
        batches[channels, pca_std] = next(iter(bundle.train))
    (rgb, y3), (gray, y1), (plain, _) = batches[3, 0.1], batches[1, 0.1], batches[1, 0.0]
    assert gray.shape == (4, 1, 64, 64) and torch.equal(y1, y3)
    torch.testing.assert_close(rgb, gray.expand(-1, 3, -1, -1), rtol=0, atol=1e-5)
    assert (gray - plain).abs().amax((1, 2, 3)).min() > 1e-4  # every image's brightness was shifted


TINY_RUN = ["--epochs", "1", "--image-size", "64", "--batch-size", "4", "--max-steps-per-epoch", "1",
            "--device", "cpu", "--precision", "fp32", "--channels-last", "off", "--workers", "0"]  # fmt: skip


def test_train_chooses_one_channel_for_gray_data_and_predict_follows(tmp_path, capsys):
    import alexnet
    from alexnet.cli import main

    data, run = _gray_set(tmp_path / "data"), tmp_path / "run"
    flags = [*TINY_RUN, "--window", "p1-p99"]
    assert main(["train", str(data), "--out", str(run), *flags]) == 0
    assert "16/32-bit gray" not in capsys.readouterr().out  # a window given: no advice
    assert json.loads((run / "config.json").read_text())["in_channels"] == 1
    predictor = alexnet.load(run / "checkpoints" / "last.pt", device="cpu")
    p = predictor.preprocess
    assert (p.channels, p.window, len(p.mean)) == (1, "p1-p99", 1)
    assert predictor.model.features[0].weight.shape[1] == 1
    img = str(data / "val" / "a" / "0.png")
    assert p.decode(img).float().mean() > 2 * alexnet.data.decode_image(img).float().mean()  # p1-p99 stretches
    (got,) = predictor.predict([img], topk=2)
    with torch.no_grad():
        want = predictor.model(p.normalize(p.transform()(p.decode(img))[None])).softmax(-1)[0]
    assert [prob for _, prob in got] == pytest.approx(sorted(want.tolist(), reverse=True), abs=1e-5)


def test_train_warns_once_that_auto_makes_12_bit_values_dark(tmp_path, capsys):
    """data check warned that 12-bit values in 16-bit files come out dark (at most 16 of 255); train said nothing and
    trained on ~16 gray levels."""
    from alexnet.cli import main
    from alexnet.data.decode import decode_image

    data = _gray_set(tmp_path / "data")
    assert main(["train", str(data), "--out", str(tmp_path / "run"), *TINY_RUN]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if "16/32-bit gray" in x]
    assert line.startswith("warning: train (a sample of 8 images): 8 16/32-bit gray image(s)")
    assert "come out dark (at most 16)" in line and f"e.g. {data / 'train/a/0.png'}" in line
    window = re.search(r"--window (\S+) \(centre,width\)", line).group(1)  # the advice spreads the values
    assert decode_image(str(data / "train/b/0.png"), window=window).max() > 200


def test_auto_stays_three_channels_for_colour(tmp_path):
    from alexnet.config import TrainConfig
    from alexnet.data.channels import choose_in_channels
    from alexnet.data.sources import open_dataset

    root = _gray_set(tmp_path)
    Image.new("RGB", (48, 48), (200, 10, 10)).save(root / "train" / "a" / "red.png")
    cfg, line = choose_in_channels(TrainConfig(), open_dataset(str(root)))
    assert cfg.in_channels == 3 and line is None
    (root / "train" / "a" / "red.png").unlink()
    cfg, line = choose_in_channels(TrainConfig(), open_dataset(str(root)))
    assert cfg.in_channels == 1 and "8 sampled train images are grayscale" in line


def test_statistics_cache_follows_the_window(tmp_path):
    """Cached mean/std of 16-bit images are not reused under another --window (the window decides the values)."""
    from alexnet.data.sources import open_dataset
    from alexnet.data.stats import load_or_compute_stats

    split = open_dataset(str(_gray_set(tmp_path))).train
    auto = load_or_compute_stats(split, progress=False)["mean"][0]  # 12-bit values in the full 16-bit range: dark
    split.window = "minmax"
    stretched = load_or_compute_stats(split, progress=False)["mean"][0]
    assert auto < 0.1 and stretched > 3 * auto


def test_gray_pack_holds_one_channel_and_trains_as_one(tmp_path):
    from alexnet.config import TrainConfig
    from alexnet.data.channels import choose_in_channels
    from alexnet.data.loading import make_loader
    from alexnet.data.pack import pack_dataset, verify_pack
    from alexnet.data.pipeline import training_preprocess
    from alexnet.data.sources import open_dataset

    pack = tmp_path / "pack"
    m = pack_dataset(str(_gray_set(tmp_path / "src")), pack, size=72, workers=0, progress=False, channels=1,
                     window="minmax")  # fmt: skip
    assert (m["channels"], m["window"]) == (1, "minmax")
    assert (pack / "train" / "images.u8").stat().st_size == 8 * 72 * 72  # a third of RGB's
    verify_pack(pack, progress=False)
    ds = open_dataset(str(pack))
    cfg, line = choose_in_channels(TrainConfig(image_size=64), ds)
    assert cfg.in_channels == 1 and line
    p = training_preprocess(cfg, ds, ds.stats)
    assert (p.channels, p.window, len(p.mean)) == (1, "minmax", 1)  # the pack's window, whatever --window says
    x, _ = next(iter(make_loader(ds.train, p, batch_size=4, train=True)))
    assert x.shape == (4, 1, 64, 64)
    with pytest.raises(UserError, match="packed with window minmax"):
        training_preprocess(dataclasses.replace(cfg, window="lung"), ds, ds.stats)
