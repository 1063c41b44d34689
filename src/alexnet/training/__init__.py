"""Training AlexNet: ``train(TrainConfig) -> run directory``.

The modules, in the order a run meets them: ``setup`` (device, run folder via ``run_dir``, data, settings from the
data, ``cpu_path``, model and optimizer from ``step``, a resumed run's ``state``), then ``loop`` (epochs of
``step.train_step`` under the ``schedule``; a time ``budget``; checkpoints through ``state``; ``rng`` for exact
resumption).
"""

from .loop import train

__all__ = ["train"]
