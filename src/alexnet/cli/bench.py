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
