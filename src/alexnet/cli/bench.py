"""``alexnet bench``: model-only, loader-only and end-to-end throughput, side by side in one run (table + JSON)."""

from __future__ import annotations

import argparse
import json

from ..bench_config import BenchConfig
from ._settings import add_settings, given


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure training img/s: model only, input pipelines only, end to end",
        description="Measure training throughput on one device, side by side in one run: the model alone on random "
        "tensors, each input pipeline alone (a PIL + DataLoader reference, the folder loader, the packed loader), "
        "and training end to end from folders and from a pack, interleaved with the model-only windows so their "
        "ratio compares windows measured side by side. Without --data it draws a synthetic set in a temporary "
        "folder first. A line is printed as each measurement ends (a minute or more each at the defaults), then "
        "the table with the device, torch version and settings; --json writes the results.",
    )
    add_settings(p, BenchConfig)  # every flag but --json: a BenchConfig field, its help, range and default
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import format_results, run_bench
    from ..outputs import prepare_output

    cfg = BenchConfig(**given(args, BenchConfig))  # checked before anything is written
    if args.json:
        prepare_output(args.json, flag="--json")
    results = run_bench(cfg)
    print(format_results(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")
    return 0
