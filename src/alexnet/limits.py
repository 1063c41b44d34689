"""Sane limits on untrusted input, checked before anything is allocated. Each is overridable.

Every file a user hands us (images, weights, manifests, CIFAR archives, config files) may be malformed or hostile:
a 108-byte PNG can declare 8000 x 1 pixels (6 GB once its shorter side is resized to 256), a 1 MB ``.pt`` can
inflate to a 1 GiB tensor, a FIFO named ``x.jpg`` blocks a reader forever. These bounds are generous for real data
(ImageNet's largest image is ~ 30 MP; a 48 MP phone photo passes) and refuse the rest with a one-line error.

Override one with an environment variable of the same name in capitals, prefixed ``ALEXNET_``, e.g.
``ALEXNET_MAX_IMAGE_PIXELS=200000000 alexnet predict huge.tif``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, fields, replace

from .errors import UserError


@dataclass(frozen=True)
class Limits:
    max_image_pixels: int = 64_000_000  # width x height declared in an image header (8000 x 8000)
    max_image_aspect: float = 20.0  # longer side / shorter side (panoramas are ~ 4-10)
    max_image_file_bytes: int = 256 << 20  # one image file
    max_weights_bytes: int = 4 << 30  # everything a weights/checkpoint file inflates to (AlexNet: ~ 0.25-0.75 GB)
    max_archive_member_bytes: int = 1 << 30  # one file inside a CIFAR archive (CIFAR-100 train: 155 MB)
    max_json_bytes: int = 64 << 20  # manifests, sidecars, stats caches, config files
    max_classes: int = 100_000  # class names in a manifest, sidecar or checkpoint


_ENV = tuple((f.name, f"ALEXNET_{f.name.upper()}") for f in fields(Limits))


def limits() -> Limits:
    """The limits in force: the defaults above, overridden by ``ALEXNET_<NAME>`` environment variables."""
    return _limits(tuple(os.environ.get(env) for _, env in _ENV))  # read per call: tests and users may change them


@functools.lru_cache(maxsize=8)
def _limits(values: tuple[str | None, ...]) -> Limits:  # parsed once per set of values: twice per image decoded
    out = Limits()
    for (name, env), text in zip(_ENV, values):
        if text is not None:
            try:
                value = type(getattr(out, name))(float(text))
            except ValueError:
                raise UserError(f"{env}={text!r}: not a number") from None
            if value <= 0:
                raise UserError(f"{env}={text!r}: must be positive")
            out = replace(out, **{name: value})
    return out


def read_bounded(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``. FIFOs, devices (a symlink to ``/dev/zero``), folders
    and larger files are refused with a ``UserError`` naming the path, without blocking and without reading them."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO would block a plain open()
    except OSError as e:
        raise UserError(f"{name}: cannot read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        import stat

        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{name}: not a regular file (a FIFO, a device or a folder); not read")
        if st.st_size > max_bytes:
            raise UserError(f"{name}: {st.st_size:,} bytes, over the {max_bytes:,}-byte limit for {what} files")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:  # grew while we read it
            raise UserError(f"{name}: over the {max_bytes:,}-byte limit for {what} files")
        return data
    except OSError as e:
        raise UserError(f"{name}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
