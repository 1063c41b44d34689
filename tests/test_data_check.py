"""The data-set doctor: findings and exit codes on folders with every kind of problem."""

import io
import json
import shutil

import numpy as np
from PIL import Image

from alexnet.cli import main
from alexnet.data.check import check_dataset, format_report


def png(path, seed, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(a)
    img = img.convert(mode) if mode != "RGB" else img
    img.save(path, format="PNG" if path.suffix == ".png" or mode == "L" else "JPEG")


def bad_dataset(root):
    for i in range(4):
        png(root / f"train/a/{i}.png", i)
        png(root / f"train/b/{i}.png", 10 + i)
    png(root / "val/a/v.png", 20)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8) + 90).save(buf, format="JPEG")
    (root / "train/a/truncated.jpg").write_bytes(buf.getvalue()[:200])
    (root / "train/a/empty.jpg").write_bytes(b"")
    (root / "train/a/text.jpg").write_text("hello")
    png(root / "train/a/png_named.jpg", 30, mode="RGB")  # JPEG content: fine, ...
    Image.new("RGB", (9, 9), (1, 2, 3)).save(root / "train/b/disguised.jpg", format="PNG")  # ... PNG named .jpg
    Image.new("CMYK", (8, 8), (0, 50, 100, 0)).save(root / "train/b/cmyk.jpg", format="JPEG")
    png(root / "train/b/gray.png", 40, mode="L")
    shutil.copy(root / "train/a/1.png", root / "train/b/copy_of_a1.png")
    return root


def test_findings(tmp_path):
    root = bad_dataset(tmp_path)
    r = check_dataset(str(root), workers=2, progress=False)
    t = r["splits"]["train"]
    assert not r["ok"]
    assert t["per_class"] == {"a": 8, "b": 8} and r["splits"]["val"]["per_class"] == {"a": 1, "b": 0}
    bad = "\n".join(t["undecodable"])
    assert len(t["undecodable"]) == 3 and all(n in bad for n in ("truncated.jpg", "empty.jpg", "text.jpg"))
    assert [p.split("/")[-1] for p in t["cmyk"]] == ["cmyk.jpg"]
    assert [p.split("/")[-1] for p in t["grayscale"]] == ["gray.png"]
    assert len(t["wrong_extension"]) == 1 and "disguised.jpg is PNG" in t["wrong_extension"][0]
    assert [sorted(p.split("/")[-1] for p in g) for g in r["duplicates"]] == [["1.png", "copy_of_a1.png"]]
    assert t["sizes"]["min"] == [8, 8]  # (W, H) and t["sizes"]["max"] == [12, 10]
    text = format_report(r)
    assert "undecodable file(s) (18.8%)" in text and "NOT OK" in text
    assert "classes in train but not in val" in text and ": b" in text


def test_threshold_decides(tmp_path):
    root = bad_dataset(tmp_path)
    r = check_dataset(str(root), workers=1, progress=False, max_bad_fraction=0.5)
    assert r["ok"] and any("undecodable" in w for w in r["warnings"])


def test_exit_codes(tmp_path, capsys):
    good = tmp_path / "good"
    for i in range(3):
        png(good / f"train/x/{i}.png", i)
        png(good / f"train/y/{i}.png", 5 + i)
        png(good / f"val/x/{i}.png", 9 + i)
    out = tmp_path / "report.json"
    assert main(["data", "check", str(good), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ok"] is True and "OK: this data set would train" in capsys.readouterr().out

    assert main(["data", "check", str(bad_dataset(tmp_path / "bad"))]) == 1

    png(good / "val/z/0.png", 99)  # a val class train does not have
    assert main(["data", "check", str(good)]) == 1
    assert "classes in val but not in train: z" in capsys.readouterr().out


def test_imbalance_and_unlabelled_flat_val(tmp_path, capsys):
    for i in range(12):
        png(tmp_path / f"train/n01440764/{i}.JPEG", i)
    png(tmp_path / "train/n01443537/0.JPEG", 50)
    png(tmp_path / "val/ILSVRC2012_val_00000001.JPEG", 60)
    (tmp_path / "train/n01484850").mkdir()  # an empty class: an error of its own, left out of the ratio
    assert main(["data", "check", str(tmp_path)]) == 1
    text = capsys.readouterr().out
    assert "class imbalance 12.0x (1 to 12 images per class" in text and "LOC_val_solution.csv" in text
    assert "per class min/max: 0/12 (largest/smallest non-empty class: 12.0x)" in text


def test_sizes_are_real_images_tiny_ones_warned_and_an_all_gray_set_is_a_note(tmp_path):
    """From a new-user trial: min/max were taken per axis (10x60 and 60x10 gave "max 60x60", no such image); a 1x1
    image passed without a word; every DICOM or gray set got a "grayscale image(s)" warning although train handles
    it (a one-channel model)."""
    for i, size in enumerate([(10, 60), (60, 10), (20, 20)]):
        png(tmp_path / f"train/a/{i}.png", i, size=size, mode="L")
        png(tmp_path / f"train/b/{i}.png", 10 + i, size=size, mode="L")
    png(tmp_path / "train/b/dot.png", 30, size=(1, 1), mode="L")
    report = check_dataset(str(tmp_path), workers=1, progress=False, val_fraction=0)
    sizes = report["splits"]["train"]["sizes"]
    assert sizes["max"] in ([10, 60], [60, 10]) and sizes["min"] == [1, 1]
    assert any("1 image(s) under 8 px on a side" in w and "dot.png (1x1)" in w for w in report["warnings"])
    assert not any("grayscale" in w for w in report["warnings"])
    assert any("every image is grayscale" in n for n in report["notes"])
    png(tmp_path / "train/a/colour.png", 40, size=(20, 20))
    report = check_dataset(str(tmp_path), workers=1, progress=False, val_fraction=0)
    assert any("7 grayscale image(s) among colour ones" in w for w in report["warnings"])


def test_wide_gray_images_that_auto_makes_dark_or_clips_are_named(tmp_path):
    """12-bit values in 16-bit PNGs came out at 0..16 of 255 and an int16 TIFF's negatives black, with data check
    saying OK; the advice's window, given to train, spreads them over 0..255."""
    from alexnet.data.decode import decode_image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 4096, (10, 12), dtype=np.uint16)).save(tmp_path / f"train/{c}/{i}.png")
    report = check_dataset(str(tmp_path), workers=1, progress=False, val_fraction=0)
    [line] = [w for w in report["warnings"] if "16/32-bit gray" in w]
    assert "4 16/32-bit gray image(s) with values" in line and "come out dark (at most 16)" in line
    assert f"e.g. {tmp_path / 'train/a/0.png'}" in line
    window = line.split("--window ")[-2].split(" ")[0]  # "centre,width"
    img = decode_image(str(tmp_path / "train/a/0.png"), window=window)
    assert img.max() > 200 and decode_image(str(tmp_path / "train/a/0.png")).max() <= 16
    again = check_dataset(
        str(tmp_path), workers=1, progress=False, val_fraction=0, window=window
    )  # data check --window
    assert not any("16/32-bit gray" in w for w in again["warnings"])
    signed = tmp_path / "s"
    for c in ("a", "b"):
        (signed / "train" / c).mkdir(parents=True)
        Image.fromarray(np.array([[-2000, 0], [1000, 2000]], np.int32), mode="I").save(signed / f"train/{c}/x.tif")
    report = check_dataset(str(signed), workers=1, progress=False, val_fraction=0)
    assert any("values -2000..2000, e.g. " in w and "fit neither 0..65535 (integers)" in w and "--window 0.5,4001" in w
               for w in report["warnings"])  # fmt: skip
    assert decode_image(str(signed / "train/a/x.tif"), channels=1)[0].tolist() == [[0, 128], [191, 255]]  # not black


def test_float_gray_images_in_0_to_1_are_not_black(tmp_path):
    from alexnet.data.decode import decode_image

    path = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.0, 0.25], [0.5, 1.0]], np.float32), mode="F").save(path)
    assert decode_image(str(path), channels=1)[0].tolist() == [[0, 64], [128, 255]]  # was all 0 and 1


def test_32bit_and_float_gray_images_outside_the_fixed_ranges_are_spread_and_named(tmp_path):
    """An int32 TIFF up to 2**31 decoded to a constant 255 and a float TIFF in -100..4900 mostly to 255, with data
    check saying nothing; NaN and inf pixels must not crash or reach the tensor."""
    from alexnet.data.decode import decode_image

    rng = np.random.default_rng(0)
    floats = rng.uniform(-100, 4900, (16, 16)).astype(np.float32)
    floats[0, :3] = np.nan, np.inf, -np.inf
    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 2**31 - 1, (16, 16)).astype(np.int32), mode="I").save(
            tmp_path / f"train/{c}/i.tif"
        )
        Image.fromarray(floats, mode="F").save(tmp_path / f"train/{c}/f.tif")
    for name in ("i.tif", "f.tif"):
        img = decode_image(str(tmp_path / "train/a" / name), channels=1).float()
        assert img.std() > 50 and 80 < img.mean() < 180  # spread over 0..255, not saturated
    report = check_dataset(str(tmp_path), workers=1, progress=False, val_fraction=0)
    [line] = [w for w in report["warnings"] if "16/32-bit gray" in w]
    assert "train: 4 16/32-bit gray image(s)" in line and "e.g. " + str(tmp_path / "train/a/f.tif") in line
    window = line.split("--window ")[-1].split(" ")[0]  # one range for all of them
    assert decode_image(str(tmp_path / "train/a/i.tif"), window=window).float().std() > 50  # spreads the set's range


def test_files_left_out_as_not_images_are_in_the_report_and_its_json(tmp_path, capsys):
    """8 of 24 photos .heic: data check said "OK" about the 16 it read. It now names the others, in text and JSON."""
    for i in range(16):
        png(tmp_path / f"d/train/{'cat' if i % 2 else 'dog'}/IMG_{i}.png", i)
    for i in range(8):
        (tmp_path / f"d/train/{'cat' if i % 2 else 'dog'}/IMG_{100 + i}.heic").write_bytes(b"ftypheic")
    (tmp_path / "d/train/cat/Thumbs.db").write_bytes(b"\0")  # written by Windows: not counted
    out = tmp_path / "report.json"
    assert main(["data", "check", str(tmp_path / "d"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"warning: {tmp_path}/d/train: left out 8 of 24 files, not image file names: .heic (8), e.g. " in text
    report = json.loads(out.read_text())
    assert report["left_out"] == [{"folder": f"{tmp_path}/d/train", "files": 8, "images": 16,
                                   "by_extension": {".heic": 8}, "sidecars": 0,
                                   "examples": [f"{tmp_path}/d/train/cat/IMG_101.heic"]}]  # fmt: skip


def test_sidecars_alone_are_a_note_not_a_warning(tmp_path):
    for i in range(4):
        png(tmp_path / f"train/{'cat' if i % 2 else 'dog'}/{i}.png", i)
        (tmp_path / f"train/{'cat' if i % 2 else 'dog'}/{i}.xml").write_text("<annotation/>")  # labelImg's boxes
    r = check_dataset(str(tmp_path), workers=1, progress=False, val_fraction=0)
    assert not any("left out" in w for w in r["warnings"])
    assert any("left out 4 of 8 files, not image file names: .xml (4)" in n and "sidecars" in n for n in r["notes"])
    assert r["left_out"][0]["sidecars"] == 4
