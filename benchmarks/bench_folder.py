"""`alexnet bench` on a real image folder (ImageNet layout, any image folder or CIFAR), with the settings of the
performance targets as defaults. Prints the table and writes JSON next to this script (``results/``).

    PYTHONPATH=src python benchmarks/bench_folder.py /data/imagenet              # GPU: bf16, channels-last, b256
    PYTHONPATH=src python benchmarks/bench_folder.py /data/imagenet --compile --batch-size 1024
    PYTHONPATH=src python benchmarks/bench_folder.py /data/folder --device cpu --image-size 64 --precision fp32

The folder is packed once into a temporary directory (``--size`` = image size x 256/224, all cores); extra flags are
passed to ``alexnet bench`` unchanged (see ``alexnet bench --help``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from alexnet.cli import main

DEFAULTS = {"--precision": "auto", "--batch-size": "256", "--image-size": "224", "--steps": "20", "--repeats": "3"}


def bench_folder(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    args = list(argv)
    for flag, value in DEFAULTS.items():
        if flag not in args:
            args += [flag, value]
    if "--channels-last" not in args:
        args.append("--channels-last")
    if "--json" not in args:
        out = Path(__file__).parent / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(exist_ok=True)
        args += ["--json", str(out)]
    return main(["bench", *args])


if __name__ == "__main__":
    sys.exit(bench_folder(sys.argv[1:]))
