"""Which samples each rank sees, in which order, and the random seed of each sample's augmentation.

Everything random in the input pipeline is a pure function of ``(seed, epoch, index)``: the epoch's permutation,
each sample's crop and flip, each batch's colour noise. So results do not depend on the number of loader workers,
a run resumed in the middle of an epoch sees exactly the batches it would have seen, and N DDP ranks with batch B/N
see the same samples per step as one process with batch B.
"""

from __future__ import annotations

import hashlib
import struct

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
