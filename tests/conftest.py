"""Test-wide settings: a private cache directory, so tests never touch ~/.cache/alexnet; `final_checkpoint_only`."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ALEXNET_CACHE", str(tmp_path_factory.mktemp("alexnet-cache")))
    yield
    mp.undo()


@pytest.fixture
def final_checkpoint_only(monkeypatch):
    """A run writes only its last epoch's ``last.pt`` (and ``best.pt`` only when that epoch is the best): for tests
    about learning, not saving, whose per-epoch half-GB checkpoints were a third to a half of their time
    (test_train and test_resume cover saving)."""
    import os

    import alexnet.training.loop as loop

    real_save, real_copy = loop.save, loop.copy_checkpoint

    def save(run, epoch, batch_in_epoch, **kw):
        if epoch >= run.epochs:
            real_save(run, epoch, batch_in_epoch, **kw)

    def copy(src, dst):
        if os.path.exists(src):  # an earlier epoch's best: its last.pt was never written
            real_copy(src, dst)

    monkeypatch.setattr(loop, "save", save)
    monkeypatch.setattr(loop, "copy_checkpoint", copy)
