"""Hostile and unlucky input: nothing lost, no hangs, bounded memory, one clear line per bad file.

Memory bounds run the case in a subprocess whose address space is capped at its size after importing torch plus
1 GiB (``RLIMIT_AS``); hangs run under a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.cli import main
from alexnet.data import pack as P
from alexnet.data.decode import DecodeError, decode_image
from alexnet.data.pack import writer as W
from alexnet.data.sources import open_dataset
from alexnet.errors import UserError
from alexnet.limits import limits

HEADROOM = 1 << 30


def run_bounded(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` after torch is imported, with the address space capped at the current size + 1 GiB."""
    prelude = textwrap.dedent(f"""
        import resource, torch, alexnet.data.decode, alexnet.data.transforms
        vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + {HEADROOM}, resource.RLIM_INFINITY))
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def small_png(path: Path, size=(40, 40)) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "d"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(3):
            small_png(root / "train" / c / f"{i}.png")
    return root


# ---------------------------------------------------------------------------------------------------------------------
# images: bounded memory per image, no hangs


def test_extreme_aspect_ratio_is_refused_within_bounded_memory(tmp_path):
    long = tmp_path / "long.png"
    Image.new("L", (8000, 1)).save(long)  # ~100 bytes; resizing its shorter side to 256 took 6+ GB
    assert long.stat().st_size < 200
    r = run_bounded(f"""
        from alexnet.data.decode import DecodeError, decode_image
        from alexnet.data.transforms import EvalTransform
        try:
            EvalTransform(crop_size=224, resize_size=256)(decode_image({str(long)!r}))
        except DecodeError as e:
            print("refused:", e)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "refused:" in r.stdout and "aspect ratio" in r.stdout


def test_huge_declared_size_is_refused_from_the_header(tmp_path):
    big = tmp_path / "big.png"
    Image.new("L", (13000, 13000)).save(big)  # tens of KB on disk; 3.4 GB and 16 s to decode and convert
    assert big.stat().st_size < 1 << 20
    r = run_bounded(f"""
        from alexnet.data.decode import DecodeError, decode_image
        try:
            decode_image({str(big)!r})
        except DecodeError as e:
            print("refused:", e)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "refused:" in r.stdout and "13000x13000" in r.stdout


def test_fifo_and_device_files_are_refused_without_blocking(folder):
    fifo = folder / "train" / "a" / "x.jpg"
    os.mkfifo(fifo)
    zero = folder / "train" / "b" / "zero.jpg"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        with pytest.raises(DecodeError, match="not a regular file"):
            decode_image(path)
    r = subprocess.run([sys.executable, "-m", "alexnet", "data", "check", str(folder)], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 1 and "x.jpg: not a regular file" in r.stdout and "zero.jpg: not a regular file" in r.stdout


def test_oversized_image_file_is_refused_before_reading(tmp_path, monkeypatch):
    p = small_png(tmp_path / "a.png")
    monkeypatch.setenv("ALEXNET_MAX_IMAGE_FILE_BYTES", str(p.stat().st_size - 1))
    with pytest.raises(DecodeError, match="byte limit"):
        decode_image(p)
    monkeypatch.setenv("ALEXNET_MAX_IMAGE_FILE_BYTES", str(p.stat().st_size))
    assert decode_image(p).shape == (3, 40, 40)
    monkeypatch.setenv("ALEXNET_MAX_IMAGE_ASPECT", "abc")
    with pytest.raises(UserError, match="ALEXNET_MAX_IMAGE_ASPECT"):
        limits()


# ---------------------------------------------------------------------------------------------------------------------
# packing never deletes what it did not write


def test_pack_leaves_a_foreign_folder_with_a_manifest_alone(folder, tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "my web app"}')
    (web / "index.html").write_text("<html>")
    assert main(["data", "pack", str(folder), str(web), "--size", "64", "--workers", "0"]) == 2
    assert sorted(p.name for p in web.iterdir()) == ["index.html", "manifest.json"]


def test_pack_refuses_to_overlap_its_source(folder):
    before = sorted(str(p) for p in folder.rglob("*"))
    for out in (folder, folder / "train", folder / "train" / "a" / "pack"):
        with pytest.raises(UserError, match="overlap"):
            P.pack_dataset(folder, out, size=40, workers=0, progress=False)
    assert sorted(str(p) for p in folder.rglob("*")) == before


def test_repacking_keeps_foreign_files_and_refuses(folder, tmp_path):
    out = tmp_path / "pack"
    P.pack_dataset(folder, out, size=40, workers=0, progress=False)
    (out / "train" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="does not write"):
        P.pack_dataset(folder, out, size=40, workers=0, progress=False)
    assert (out / "train" / "notes.txt").read_text() == "mine" and (out / "manifest.json").is_file()
    (out / "train" / "notes.txt").unlink()
    P.pack_dataset(folder, out, size=48, workers=0, progress=False)  # our own pack: redone in place
    assert open_dataset(out).image_size == 48


def test_a_second_packer_is_refused_while_the_first_holds_the_lock(folder, tmp_path):
    import fcntl

    out = tmp_path / "pack"
    out.mkdir()
    fd = os.open(out / P.LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running `alexnet data pack` holds it
    try:
        with pytest.raises(UserError, match="another `alexnet data pack`"):
            P.pack_dataset(folder, out, size=40, workers=0, progress=False)
    finally:
        os.close(fd)
    P.pack_dataset(folder, out, size=40, workers=0, progress=False)
    splits = json.loads((out / "manifest.json").read_text())["splits"]
    assert splits["train"]["count"] + splits["val"]["count"] == 6  # a val split held out of train/


@pytest.mark.parametrize("name", [".packing", "manifest.json.tmp", "manifest.json", ".lock"])
def test_pack_never_writes_through_a_planted_symlink(folder, tmp_path, name):
    """Issue 20 item 1: a link in an existing pack to a user's file was overwritten (the marker text, the manifest),
    and the .tmp link was then renamed to manifest.json."""
    out = tmp_path / "pack"
    P.pack_dataset(folder, out, size=40, workers=0, progress=False)
    mine = tmp_path / "thesis.json"
    mine.write_text((out / "manifest.json").read_text() if name == "manifest.json" else "precious")
    before = mine.read_text()
    (out / name).unlink(missing_ok=True)
    (out / name).symlink_to(mine)
    with pytest.raises(UserError, match="symbolic link") as e:
        P.pack_dataset(folder, out, size=48, workers=0, progress=False)
    assert str(out / name) in str(e.value) and "\n" not in str(e.value)
    assert mine.read_text() == before and (out / name).is_symlink()
    if name != "manifest.json":
        assert not (out / "manifest.json").is_symlink()


def test_a_dangling_lock_symlink_creates_nothing_at_its_target(folder, tmp_path):
    out, target = tmp_path / "pack", tmp_path / "elsewhere" / "created"
    out.mkdir()
    target.parent.mkdir()
    (out / ".lock").symlink_to(target)
    with pytest.raises(UserError, match="symbolic link"):
        P.pack_dataset(folder, out, size=40, workers=0, progress=False)
    assert not target.exists() and not list(target.parent.iterdir())
    assert main(["data", "pack", str(folder), str(out), "--size", "64", "--workers", "0"]) == 2  # one line, no trace


def test_pack_on_a_full_disk_names_the_file_and_leaves_nothing(folder, tmp_path, capsys):
    """Issue 20 item 11: no path in the message and a 20 MB images.u8 left behind. A 2 MB tmpfs, where mounting one
    is allowed (root); the same failure by a file whose writes fail with ENOSPC everywhere."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                                           capture_output=True).returncode:  # fmt: skip
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = disk / "pack"
        with pytest.raises(UserError, match="no space left") as e:
            P.pack_dataset(folder, out, size=400, workers=0, progress=False, val_fraction=0)  # 6 x 480 KB: 2.9 MB
        assert str(out / "train" / "images.u8") in str(e.value) and "\n" not in str(e.value)
        assert not out.exists() and not list(disk.iterdir())
        assert (
            main(["data", "pack", str(folder), str(out), "--size", "400", "--workers", "0", "--val-fraction", "0"]) == 2
        )
        assert "no space left" in capsys.readouterr().err and not out.exists()
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_pack_removes_its_partial_files_when_a_write_fails(folder, tmp_path, monkeypatch):
    import errno

    real = W._create

    class FullDisk:
        def __init__(self, f):
            self.f, self.budget = f, 100_000  # bytes that fit

        def write(self, data):
            self.budget -= len(data)
            if self.budget < 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(W, "_create", lambda path, mode="wb": FullDisk(real(path, mode)))
    out = tmp_path / "pack"
    with pytest.raises(UserError, match=r"images\.u8: no space left on the device; the partial pack was removed"):
        P.pack_dataset(folder, out, size=100, workers=0, progress=False)  # 30 KB per image
    assert not out.exists()
    monkeypatch.undo()
    P.pack_dataset(folder, out, size=40, workers=0, progress=False)  # an earlier pack of ours, being redone:
    monkeypatch.setattr(W, "_create", lambda path, mode="wb": FullDisk(real(path, mode)))
    with pytest.raises(UserError, match="no space left"):
        P.pack_dataset(folder, out, size=100, workers=0, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing torn; the rerun starts clean


def test_a_block_of_only_unreadable_images_is_skipped(folder, tmp_path):
    for i in range(2 * W.TASK_IMAGES + 5):  # at least one whole worker block is junk, whatever its alignment
        (folder / "train" / "a" / f"junk{i:03d}.jpg").write_bytes(b"not an image")
    manifest = P.pack_dataset(folder, tmp_path / "pack", size=40, workers=0, progress=False, max_bad_fraction=1,
                              val_fraction=0)  # fmt: skip
    info = manifest["splits"]["train"]
    assert info["count"] == 6 and len(info["skipped"]) == 2 * W.TASK_IMAGES + 5
    assert open_dataset(tmp_path / "pack").train.load(5).shape == (3, 40, 40)


# ---------------------------------------------------------------------------------------------------------------------
# statistics cache and packs on disk


def test_stale_stats_are_recomputed_after_the_data_changes(folder):
    from alexnet.data.sources import open_splits
    from alexnet.data.stats import default_stats_path, load_or_compute_stats

    train, _ = open_splits(str(folder))
    before = load_or_compute_stats(train, progress=False)
    Image.new("RGB", (40, 40), (255, 255, 255)).save(folder / "train" / "a" / "0.png")  # same name, new pixels
    train, _ = open_splits(str(folder))
    after = load_or_compute_stats(train, progress=False)
    assert after["mean"][0] > before["mean"][0] + 0.05
    default_stats_path(train).write_text("[1, 2]")  # a JSON list crashed the reader
    assert load_or_compute_stats(train, progress=False)["mean"] == pytest.approx(after["mean"])


def test_a_constant_channel_gets_a_finite_std(tmp_path):
    from alexnet.data.sources import open_splits
    from alexnet.data.stats import MIN_STD, compute_stats

    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(2):
            px = np.zeros((16, 16, 3), np.uint8)
            px[..., 0] = np.random.default_rng(i).integers(0, 255, (16, 16))  # green and blue are always 0
            Image.fromarray(px).save(tmp_path / "train" / c / f"{i}.png")
    train, _ = open_splits(str(tmp_path))
    std = compute_stats(train, progress=False)["std"]
    assert std[0] > 0.1 and std[1] == std[2] == MIN_STD


def test_data_verify_finds_a_flipped_byte_anywhere(folder, tmp_path):
    out = tmp_path / "pack"
    P.pack_dataset(folder, out, size=40, workers=0, progress=False)
    assert main(["data", "verify", str(out)]) == 0
    with open(out / "train" / "images.u8", "r+b") as f:
        f.seek(7)
        b = f.read(1)
        f.seek(7)
        f.write(bytes([b[0] ^ 1]))
    assert main(["data", "verify", str(out)]) == 1


def test_a_pack_split_name_cannot_leave_the_pack(folder, tmp_path):
    out = tmp_path / "pack"
    P.pack_dataset(folder, out, size=40, workers=0, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    m["splits"]["../../etc"] = m["splits"].pop("train")
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="splits"):
        open_dataset(out)


# ---------------------------------------------------------------------------------------------------------------------
# outputs: checked before the work, never clobbering other files


def test_export_refuses_an_unrelated_sidecar_and_unwritable_paths(tmp_path, capsys):
    import torch

    from alexnet.checkpoint import save_payload
    from alexnet.model import create_model
    from alexnet.preprocess import Preprocess

    ck = tmp_path / "ck.pt"
    save_payload({"arch": "alexnet", "model": create_model("alexnet", num_classes=2).state_dict(),
                     "classes": ["a", "b"], "preprocess": Preprocess(crop=64, resize=73).to_dict()}, ck)  # fmt: skip
    (tmp_path / "x.json").write_text("someone's notes")
    assert main(["export", str(ck), "--format", "safetensors", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "x.json already exists" in capsys.readouterr().err
    assert (tmp_path / "x.json").read_text() == "someone's notes" and not (tmp_path / "x.safetensors").exists()
    out = str(tmp_path / "x.safetensors")
    assert main(["export", str(ck), "--format", "safetensors", "--out", out, "--overwrite"]) == 0
    assert json.loads((tmp_path / "x.json").read_text())["classes"] == ["a", "b"]
    blocked = tmp_path / "file"
    blocked.write_text("")
    for argv in (["export", str(ck), "--format", "onnx", "--out", str(blocked / "m.onnx")],
                 ["data", "check", str(tmp_path), "--json", str(blocked / "r.json")]):  # fmt: skip
        assert main(argv) == 2
        assert f"{blocked} is not a folder" in capsys.readouterr().err
    assert torch.load(ck, weights_only=True)["classes"] == ["a", "b"]  # the model is untouched


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_last_good_one(tmp_path):
    ck = tmp_path / "last.pt"
    code = f"""
        import signal, torch
        from alexnet.checkpoint import save_payload
        save_payload({{"model": {{"w": torch.ones(4)}}}}, {str(ck)!r})  # the last good one
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
        try:
            save_payload({{"model": {{"w": torch.zeros(1 << 20)}}}}, {str(ck)!r})
        except Exception as e:
            print(type(e).__name__ + ": " + str(e))
    """
    r = run_bounded(code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("WeightsError: cannot write") and len(r.stdout.strip().splitlines()) == 1
    assert f"the last good checkpoint is {ck}" in r.stdout
    import torch

    assert torch.load(ck, weights_only=True)["model"]["w"].tolist() == [1.0] * 4
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_stale_temporary_files_are_cleaned(tmp_path):
    from alexnet.checkpoint import clean_stale_temps

    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"x" * 100)  # a save killed with -9
    (tmp_path / "last.pt").write_bytes(b"keep")
    (tmp_path / "notes.tmp").write_bytes(b"not ours: no leading dot")
    assert [p.name for p in clean_stale_temps(tmp_path)] == [".last.pt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "notes.tmp"]


def test_a_recompressed_weights_file_is_refused_before_loading(tmp_path):
    import zipfile

    import torch

    plain = tmp_path / "big.pt"
    torch.save({"w": torch.zeros(1 << 25)}, plain)  # 128 MiB of zeros, stored as torch.save stores: uncompressed
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    plain.unlink()
    assert bomb.stat().st_size < 1 << 20
    r = run_bounded(f"""
        from alexnet.errors import UserError
        from alexnet.weights import read_file
        try:
            read_file({str(bomb)!r})
        except UserError as e:
            print("refused:", e)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "refused:" in r.stdout and "inflate" in r.stdout
