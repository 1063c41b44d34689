"""``alexnet export MODEL --format onnx|torchscript|safetensors``: write a deployable file, then check it.

ONNX and torchscript (a ``torch.export`` ``.pt2`` archive) are run on random inputs after writing and compared with
PyTorch (max abs diff <= 1e-4 in fp32); a mismatch is an error. safetensors writes the weights plus a ``.json``
sidecar that ``alexnet.load`` reads back.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..export import FORMATS

    p = subparsers.add_parser(
        "export",
        help="export to ONNX, torch.export (.pt2) or safetensors, with a parity check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="our checkpoint (.pt), a torchvision AlexNet .pth, or .safetensors + .json")
    p.add_argument("--format", choices=FORMATS, required=True, help="output format")
    p.add_argument("--out", default=None, help="output file (default: MODEL with .onnx / .pt2 / .safetensors)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check against PyTorch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import PARITY_ATOL, export

    path, diff = export(args.model, args.format, args.out, check=not args.no_check)
    note = "" if diff is None else f" (parity with PyTorch: max abs diff {diff:.2e} <= {PARITY_ATOL:g})"
    print(f"wrote {path}{note}")
    if args.format == "safetensors":
        print(f"wrote {path.with_suffix('.json')}")
    return 0
