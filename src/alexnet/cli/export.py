"""``alexnet export MODEL --format onnx|pt2|safetensors``: write a deployable file, then check it.

ONNX and pt2 (a ``torch.export`` archive) are run on random inputs after writing and compared with PyTorch (max abs
diff <= 1e-4 in fp32); a mismatch is an error. safetensors writes the weights plus a ``.json`` sidecar that
``alexnet.load`` reads back. Every format carries the class names and the preprocessing; ``alexnet predict`` and
``alexnet evaluate`` run ``.onnx`` files through onnxruntime. A ``.pt2`` is for ``torch.export.load`` in a program
of yours, on files you trust: loading one can run code hidden in it, so predict, evaluate and serve refuse it.
"""

from __future__ import annotations

import argparse
import sys

FORMATS = ("onnx", "pt2", "safetensors")  # = alexnet.export.FORMATS (that module imports torch)
_RENAMED = {"torchscript": "pt2"}  # old name -> new; still accepted, with a note


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export to ONNX, torch.export (.pt2) or safetensors, with a parity check", description=__doc__
    )
    p.add_argument("model", help="our checkpoint (.pt), a torchvision AlexNet .pth, or .safetensors + .json")
    shown = "{" + ",".join(FORMATS) + "}"  # the old names are accepted but not advertised
    p.add_argument("--format", choices=FORMATS + tuple(_RENAMED), metavar=shown, required=True, help="output format")
    p.add_argument("--out", default=None, help="output file (default: MODEL with .onnx / .pt2 / .safetensors)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check against PyTorch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (and its .json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import PARITY_ATOL, export

    fmt = args.format
    if fmt in _RENAMED:
        fmt = _RENAMED[fmt]
        print(
            f"alexnet export: note: --format {args.format} is now called {fmt} (a torch.export archive)",
            file=sys.stderr,
        )
    path, diff = export(args.model, fmt, args.out, check=not args.no_check, overwrite=args.overwrite)
    note = "" if diff is None else f" (parity with PyTorch: max abs diff {diff:.2e} <= {PARITY_ATOL:g})"
    print(f"wrote {path}{note}")
    if fmt == "safetensors":
        print(f"wrote {path.with_suffix('.json')}")
    return 0
