"""Figure plumbing shared by the plot modules: matplotlib (optional extra ``[plots]``) loaded on first use, fixed
pixel sizes, literal text in fonts that cover it, and the heat-map overlay that Grad-CAM figures, ``alexnet explain``
and the server draw."""

from __future__ import annotations

import re
import sys
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

DPI = 100
SIZES = {  # px (width, height) of each PNG
    "curves": (1400, 900),
    "conv1_filters": (1400, 700),
    "confusion": (1400, 1200),
    "neighbours": (1050, 750),
    "predictions": (1000, 1060),
    "gradcam": (1400, 1000),
    "units": (1400, 1000),
}
EXPLANATION_SIZE = (1200, 470)  # px, one image's overlay PNG (alexnet explain)
HEAT_CMAP = "jet"  # the usual Grad-CAM colours: blue (low) to red (high)
HEAT_ALPHA = 0.6  # the heat map's opacity where the map is largest; it fades to 0 where the map is 0
# families drawn from, in order, for the characters of class and file names that matplotlib's DejaVu Sans lacks:
# Chinese, Japanese and Korean (Debian: fonts-noto-cjk, fonts-wqy-zenhei, fonts-droid-fallback; macOS; Windows), then
# a few other scripts (Debian: fonts-noto-core). Only the installed ones are used.
FALLBACK_FONTS = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans SC",
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "PingFang SC", "Hiragino Sans",
    "Microsoft YaHei", "SimHei", "Malgun Gothic", "Arial Unicode MS",
    "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Devanagari", "Noto Sans Thai",
)  # fmt: skip
MISSING_GLYPH = re.compile(r"Glyph (\d+) .*missing from font")  # matplotlib's warning, one per character and text
_said_missing_glyphs = False  # the line about them is printed once per process (one command, or one server)


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend; ``UserError`` naming the extra when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'alexnet[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fallback_fonts() -> list[str]:
    """The installed ``FALLBACK_FONTS``, in their order."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return [name for name in FALLBACK_FONTS if name in installed]


def monospace() -> list[str]:
    """A ``family=`` for monospaced text, with the fallbacks that ``plain_text`` gives the rest."""
    return ["monospace", *fallback_fonts()]


def plain_text(plot):
    """Draw ``plot``'s text literally and in fonts that have its characters.

    Class names are data: one like ``$\\notacommand{$`` would otherwise be parsed as matplotlib mathtext and crash
    the figure, and characters the default font lacks (Chinese, say) come from the installed ``FALLBACK_FONTS``.
    Characters no installed font has are drawn as boxes, as before, but said once per process in one line naming
    them and the package that adds them, in place of matplotlib's warning per character with its source line.
    """
    import functools

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        import matplotlib

        pyplot()
        family = [*matplotlib.rcParams["font.family"], *fallback_fonts()]
        rc = matplotlib.rc_context({"text.parse_math": False, "font.family": family})
        with rc, warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("always", MISSING_GLYPH.pattern)  # each character's, even one seen before
            result = plot(*args, **kwargs)
        missing = []
        for w in caught:
            m = MISSING_GLYPH.match(str(w.message))
            if m is None:  # not ours: as it would have been
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
            elif chr(int(m[1])) not in missing:
                missing.append(chr(int(m[1])))
        if missing:
            _say_missing_glyphs(missing)
        return result

    return wrapper


def _say_missing_glyphs(chars: list[str]) -> None:
    global _said_missing_glyphs
    if _said_missing_glyphs:
        return
    _said_missing_glyphs = True
    cjk = any(unicodedata.name(c, "").startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL")) for c in chars)
    shown = ", ".join(f"{c} (U+{ord(c):04X})" for c in chars[:5]) + (f" and {len(chars) - 5} more" * (len(chars) > 5))
    package = "fonts-noto-cjk" if cjk else "fonts-noto-core"
    print(f"warning: no installed font has the characters {shown}: the figures draw them as boxes; on Debian or "
          f"Ubuntu, apt install {package} adds them", file=sys.stderr)  # fmt: skip


def new_figure(name: str):
    """A figure of ``SIZES[name]`` px."""
    w, h = SIZES[name]
    return pyplot().figure(figsize=(w / DPI, h / DPI), dpi=DPI)


def save(fig, out: Path) -> Path:
    """Write ``fig`` as a PNG of its exact pixel size and close it."""
    fig.savefig(out, dpi=DPI)  # no bbox_inches="tight": it would change the pixel size
    pyplot().close(fig)
    return out


def imshow_image(ax, img: torch.Tensor, **kw) -> None:
    """A (C, H, W) image, uint8 0..255 or float 0..1, as it is: a one-channel image in gray (matplotlib would colour
    it with viridis and stretch its contrast), three channels as RGB."""
    if img.shape[0] == 1:  # uint8 crops are 0..255: a 0..1 range made every pixel above 0 white
        top = 255.0 if img.dtype == torch.uint8 else 1.0
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0.0, vmax=top, **kw)
    else:
        ax.imshow(img.permute(1, 2, 0).numpy(), **kw)


def show_image(ax, img: torch.Tensor, title: str, color: str = "black") -> None:
    imshow_image(ax, img)
    ax.set_title(title, fontsize=7, color=color)
    ax.set_xticks([])
    ax.set_yticks([])


def heat(amap: torch.Tensor) -> np.ndarray:
    """A map ``(H, W)`` -> float ``(H, W)`` in [0, 1]: its positive part over its maximum (all 0 if none)."""
    m = amap.detach().float().cpu().clamp_min(0)
    top = float(m.max())
    return (m / top).numpy() if top > 0 else np.zeros(m.shape, dtype=np.float32)


def overlay(crop: torch.Tensor, amap: torch.Tensor, *, cmap: str = HEAT_CMAP, alpha: float = HEAT_ALPHA) -> np.ndarray:
    """The crop ``uint8 (C, H, W)`` (C: 1 or 3) with the map's heat colours blended in, opacity ``alpha x heat``:
    RGB float ``(H, W, 3)`` in [0, 1]. Where the map is 0 (or negative) the image shows unchanged."""
    import matplotlib

    img = crop.permute(1, 2, 0).float().numpy() / 255
    h = heat(amap)
    colours = matplotlib.colormaps[cmap](h)[..., :3]
    a = (alpha * h)[..., None]
    return np.clip((1 - a) * img + a * colours, 0, 1)  # float rounding may step past 1


def filter_grid(weight: torch.Tensor, cols: int = 8, pad: int = 1) -> np.ndarray:
    """conv1 weights (K, 3, h, w) -> an RGB mosaic (rows*(h+pad)+pad, cols*(w+pad)+pad, 3), each kernel min-max
    scaled to 0..1 on its own (the paper's Figure 3 contrast normalisation), white between kernels."""
    w = weight.detach().float().cpu()
    k, _, h, wd = w.shape
    lo = w.flatten(1).min(1).values.view(k, 1, 1, 1)
    hi = w.flatten(1).max(1).values.view(k, 1, 1, 1)
    w = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()  # (K, h, w, 3)
    rows = -(-k // cols)
    grid = np.ones((rows * (h + pad) + pad, cols * (wd + pad) + pad, 3), dtype=np.float32)
    for i in range(k):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (wd + pad) : pad + c * (wd + pad) + wd] = w[i]
    return grid


def top_confusions(confusion: np.ndarray, classes: list[str], n: int = 30) -> list[tuple[str, str, int]]:
    """The ``n`` largest off-diagonal counts as ``(true, predicted, count)``, largest first."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None)[::-1][:n]
    pairs = [np.unravel_index(i, off.shape) for i in flat]
    return [(classes[t], classes[p], int(off[t, p])) for t, p in pairs if off[t, p] > 0]
