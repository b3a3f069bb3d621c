"""Where this process sits: data-parallel rank and DataLoader worker, as one explicit value.

Library code takes a :class:`World` as an argument; only :meth:`World.detect` looks at the
environment (``torch.distributed`` when initialized, then ``torch.utils.data.get_worker_info``).
Nothing deep inside reads environment variables.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ddecomp.errors import UserError


@dataclass(frozen=True)
class World:
    """Data-parallel ``rank`` of ``world_size`` and DataLoader ``worker`` of ``num_workers``.

    ``num_workers = 0`` means batches are produced in the rank's main process (``worker = 0``).
    """

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise UserError(f"world_size {self.world_size} must be >= 1")
        if not 0 <= self.rank < self.world_size:
            raise UserError(f"rank {self.rank} is not in 0..{self.world_size - 1} (world size)")
        if self.num_workers < 0:
            raise UserError(f"num_workers {self.num_workers} must be >= 0")
        if not 0 <= self.worker < max(1, self.num_workers):
            raise UserError(f"worker {self.worker} is not in 0..{max(1, self.num_workers) - 1}")

    @classmethod
    def detect(
        cls, rank: int | None = None, world_size: int | None = None, num_workers: int = 0
    ) -> World:
        """Fill ``rank`` / ``world_size`` left as None from ``torch.distributed`` (else 0 / 1)."""
        if rank is None or world_size is None:
            import torch.distributed as dist

            on = dist.is_available() and dist.is_initialized()
            if rank is None:
                rank = dist.get_rank() if on else 0
            if world_size is None:
                world_size = dist.get_world_size() if on else 1
        return cls(rank=rank, world_size=world_size, worker=0, num_workers=num_workers)

    def with_worker(self, worker: int) -> World:
        return replace(self, worker=worker)
