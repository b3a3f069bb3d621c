"""Where this process sits: data-parallel rank, local device, and DataLoader workers, one value.

One :class:`World` serves the loaders (which rows a rank reads, how many worker processes build
its batches) and the trainer (which device, whether there is a process group). Library code takes
a World as an argument; only :meth:`World.detect` looks at the environment: ``torch.distributed``
when it is initialized, else the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), else one process. Nothing deep inside reads environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from ddecomp.errors import UserError


def _int(value: object, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise UserError(f"{name} {value!r} must be an integer >= {lo}")
    return value


@dataclass(frozen=True)
class World:
    """Data-parallel ``rank`` of ``world_size``, the ``local_rank`` on its node (its GPU), and
    ``num_workers`` DataLoader processes per rank (``0``: batches are built in the rank's own
    process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        _int(self.world_size, "world_size", 1)
        _int(self.rank, "rank", 0)
        _int(self.local_rank, "local_rank", 0)
        _int(self.num_workers, "num_workers", 0)
        if self.rank >= self.world_size:
            raise UserError(f"rank {self.rank} is not in 0..{self.world_size - 1} (world size)")

    @classmethod
    def detect(cls, num_workers: int = 0, env: Mapping[str, str] | None = None) -> World:
        """This process's place: ``torch.distributed`` when initialized, else torchrun's
        ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (``env``, default ``os.environ``), else 0 / 1."""
        env = os.environ if env is None else env
        try:
            rank = int(env.get("RANK", "0"))
            world_size = int(env.get("WORLD_SIZE", "1"))
            local_rank = int(env.get("LOCAL_RANK", "0"))
        except ValueError as e:
            raise UserError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {e}") from None
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        return cls(rank, world_size, local_rank, num_workers)

    def with_workers(self, num_workers: int) -> World:
        """The same place with ``num_workers`` DataLoader processes."""
        return replace(self, num_workers=num_workers)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes logs and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1
