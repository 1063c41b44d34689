"""Where a run's numbers go: ``metrics.jsonl`` (every logged step and epoch), ``metrics.csv`` (one row per epoch),
TensorBoard event files when tensorboard is installed, and the console. Only rank 0 writes; other ranks get a
logger that does nothing.

Every record has ``time``: seconds of training since the run started, summed over resumed sessions (the time
between a stop and its resume is not counted; the checkpoint carries the total so far). Epoch records say which
metric chooses ``best.pt`` (``best_metric``: ``val_top1``, higher is better, or ``train_loss`` without a val split,
lower is better) and whether this epoch's weights became ``best.pt`` (``is_best``).

A fresh run starts new files. A resumed run keeps the records up to the checkpoint's step and drops later ones
(written after the checkpoint by the process that stopped), so no step or epoch appears twice.
"""

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
    "best_metric",
    "is_best",
    "time",
]


class RunLog:
    """``resume_step``: None for a fresh run, else the step of the checkpoint being resumed; ``elapsed``: seconds
    of training before this session (from that checkpoint)."""

    def __init__(
        self, run_dir: Path, *, enabled: bool = True, resume_step: int | None = None, elapsed: float = 0.0
    ) -> None:
        self.enabled = enabled
        self.start = time.monotonic() - elapsed
        self.tb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        jsonl_path, csv_path = run_dir / "metrics.jsonl", run_dir / "metrics.csv"
        kept_records, kept_rows = [], []
        if resume_step is not None:
            kept_records, kept_rows = _records_until(jsonl_path, csv_path, resume_step)
        self.jsonl = open(jsonl_path, "w")  # noqa: SIM115 - closed in close()
        self.jsonl.writelines(kept_records)
        self.csv_file = open(csv_path, "w", newline="")  # noqa: SIM115
        self.csv = csv.DictWriter(self.csv_file, fieldnames=EPOCH_COLUMNS, extrasaction="ignore")
        self.csv.writeheader()
        self.csv.writerows(kept_rows)
        self.jsonl.flush()
        self.csv_file.flush()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # tensorboard is an optional extra
            self.tb = None

    def elapsed(self) -> float:
        """Seconds of training in this run so far (all sessions)."""
        return time.monotonic() - self.start

    def step(self, **values) -> None:
        self._write({"kind": "step", **values})
        if self.tb is not None:
            for key in ("train_loss", "lr", "img_per_s"):
                if key in values:
                    self.tb.add_scalar(f"step/{key}", values[key], values["step"])

    def epoch(self, **values) -> None:
        record = self._write({"kind": "epoch", **values})
        if not self.enabled:
            return
        self.csv.writerow(record)
        self.csv_file.flush()
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, float):
                    self.tb.add_scalar(f"epoch/{key}", value, values["epoch"])

    def _write(self, record: dict) -> dict:
        if not self.enabled:
            return record
        record.setdefault("time", round(self.elapsed(), 3))
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        return record

    def print(self, message: str) -> None:
        """A console line on stdout, with the set-up lines (``alexnet train d > log.txt`` keeps the whole log; the
        epochs' results went to stderr, the set-up to stdout), not breaking a progress bar (on stderr)."""
        if not self.enabled:
            return
        from tqdm import tqdm

        tqdm.write(message, file=sys.stdout)

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self.enabled or self.jsonl.closed:
            return
        self.jsonl.close()
        self.csv_file.close()
        if self.tb is not None:
            self.tb.close()


def _records_until(jsonl_path: Path, csv_path: Path, step: int) -> tuple[list[str], list[dict]]:
    """The metrics.jsonl lines and metrics.csv rows of steps up to ``step`` (a torn last line is dropped)."""
    lines = []
    if jsonl_path.is_file():
        for line in jsonl_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= step:
                lines.append(line + "\n")
    rows = []
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= step]
    return lines, rows
