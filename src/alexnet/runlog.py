"""Where a run's numbers go: ``metrics.jsonl`` (every logged step and epoch), ``metrics.csv`` (one row per epoch),
TensorBoard event files when tensorboard is installed, and the console (a tqdm bar on a terminal, plain lines
otherwise). Only rank 0 writes; other ranks get a logger that does nothing."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

EPOCH_COLUMNS = [
    "epoch",
    "step",
    "train_loss",
    "val_loss",
    "val_top1",
    "val_top5",
    "lr",
    "img_per_s",
    "data_wait",
    "time",
]


class RunLog:
    def __init__(self, run_dir: Path, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.start = time.time()
        self.tb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()
        csv_path = run_dir / "metrics.csv"
        new = not csv_path.exists()
        self.csv_file = open(csv_path, "a", newline="")  # noqa: SIM115
        self.csv = csv.DictWriter(self.csv_file, fieldnames=EPOCH_COLUMNS, extrasaction="ignore")
        if new:
            self.csv.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # tensorboard is an optional extra
            self.tb = None

    def step(self, **values) -> None:
        self._write({"kind": "step", **values})
        if self.tb is not None:
            for key in ("train_loss", "lr", "img_per_s"):
                if key in values:
                    self.tb.add_scalar(f"step/{key}", values[key], values["step"])

    def epoch(self, **values) -> None:
        self._write({"kind": "epoch", **values})
        if not self.enabled:
            return
        self.csv.writerow(values)
        self.csv_file.flush()
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, float):
                    self.tb.add_scalar(f"epoch/{key}", value, values["epoch"])

    def _write(self, record: dict) -> None:
        if not self.enabled:
            return
        record.setdefault("time", round(time.time() - self.start, 3))
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()

    def print(self, message: str) -> None:
        """A console line that does not break an active tqdm bar."""
        if not self.enabled:
            return
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        self.csv_file.close()
        if self.tb is not None:
            self.tb.close()
