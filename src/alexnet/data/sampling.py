"""Which samples each rank sees, in which order, and the random numbers of each sample's augmentation.

Everything random in the input pipeline is a pure function of ``(seed, epoch, index)``: the epoch's permutation,
each sample's crop, flip and colour noise. So results do not depend on the number of loader workers, a run resumed
in the middle of an epoch sees exactly the batches it would have seen, and N DDP ranks with batch B/N see the same
samples, augmented the same way, per step as one process with batch B. The folder pipeline seeds one
``torch.Generator`` per sample (``generator``); the packed loader draws a whole batch at once from a counter-based
hash (``uniforms``), which costs microseconds instead of a generator per image.
"""

from __future__ import annotations

import hashlib
import math
import struct

import numpy as np
import torch


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (seed, epoch, index...). Stable across processes and versions."""
    digest = hashlib.blake2b(struct.pack(f"<{len(parts)}q", *parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(*parts: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded by ``mix_seed(*parts)``."""
    g = torch.Generator(device=device)
    g.manual_seed(mix_seed(*parts))
    return g


_STEP = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constants: Weyl steps per sample and per draw, splitmix64's mixers
_DRAW = np.uint64(0xD1B54A32D192ED03)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def uniforms(indices: torch.Tensor | np.ndarray, count: int, *, seed: int, epoch: int) -> np.ndarray:
    """float64 ``(len(indices), count)`` uniforms in [0, 1): draw j of sample i is a pure function of
    ``(seed, epoch, indices[i], j)``.

    Counter-based: each draw is the splitmix64 finaliser of ``key + index * STEP + j * DRAW`` (arithmetic mod 2^64),
    the top 53 bits scaled to [0, 1). Vectorised over the batch, and independent of which batch or rank a sample is in.
    NumPy rather than torch: a batch is a few hundred numbers, where per-op overhead is what costs.
    """
    key = np.uint64(mix_seed(seed, epoch, -2))
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)[:, None]
    with np.errstate(over="ignore"):
        z = key + idx * _STEP + np.arange(count, dtype=np.uint64)[None, :] * _DRAW
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def normals(u: np.ndarray) -> np.ndarray:
    """Standard normals from uniforms ``(..., 2k)`` -> ``(..., k)`` (Box-Muller, the cosine branch)."""
    return np.sqrt(-2 * np.log1p(-u[..., 0::2])) * np.cos(2 * math.pi * u[..., 1::2])


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """Indices of all ``n`` samples in this epoch's order (a fresh permutation per epoch when shuffling)."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=generator(seed, epoch, -1))


def rank_batches(
    n: int,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool,
    drop_last: bool,
    rank: int = 0,
    world_size: int = 1,
) -> list[torch.Tensor]:
    """This rank's index batches for one epoch. ``batch_size`` is per rank.

    Global step k uses ``order[k*B*W : (k+1)*B*W]`` with rank r taking every W-th element from offset r, so the
    union over ranks of step k is exactly what one process with batch ``B*W`` would use. Without ``drop_last`` the
    order is padded by wrapping around so every rank has the same number of batches (as ``DistributedSampler``);
    evaluation uses ``world_size == 1`` or de-duplicates.
    """
    order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
    global_batch = batch_size * world_size
    if drop_last:
        steps = n // global_batch
        order = order[: steps * global_batch]
    else:
        steps = -(-n // global_batch)
        if world_size > 1 and steps * global_batch > n:
            pad = steps * global_batch - n
            order = torch.cat([order, order[:pad].repeat(-(-pad // max(n, 1)))[:pad]])
    mine = order[rank::world_size] if world_size > 1 else order
    return [mine[i * batch_size : (i + 1) * batch_size] for i in range(steps) if len(mine[i * batch_size :]) > 0]


def loader_batches(
    n: int, *, batch_size: int, seed: int, epoch: int, train: bool, drop_last: bool, rank: int = 0, world_size: int = 1
) -> list[torch.Tensor]:
    """A loader's index batches for this rank and epoch: training (or one process) as ``rank_batches``, shuffled
    when ``train``; evaluation across ranks takes every sample exactly once (no padding), so summed metrics are
    exact. The one traversal order every loader (folder, packed, in-memory) uses."""
    if train or world_size == 1:
        return rank_batches(n, batch_size=batch_size, seed=seed, epoch=epoch, shuffle=train, drop_last=drop_last,
                            rank=rank, world_size=world_size)  # fmt: skip
    return list(torch.arange(rank, n, world_size).split(batch_size))
