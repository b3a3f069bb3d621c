"""Where this process sits: data-parallel rank, local device, and DataLoader workers, one value.

One :class:`World` serves the loaders (which rows a rank reads, how many worker processes build
its batches) and the trainer (which device, whether there is a process group). Library code takes
a World as an argument; only :meth:`World.detect` looks at the environment: ``torch.distributed``
when it is initialized, else the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), else one process. Nothing deep inside reads environment variables.

Under tensor or context parallelism the ranks of one data-parallel *replica* must read identical
batches, so the data-parallel place is not the global rank: :meth:`World.data_parallel` takes it
from a data-parallel process group or a ``DeviceMesh`` dimension (``mesh["dp"]``, or the mesh and
the dimension's name), and every loader accepts such a group or mesh as its ``world``
(:func:`as_world`). With 2 data-parallel x 2 tensor-parallel ranks, global ranks 0 and 1 (one
replica) both get data-parallel rank 0 of 2, and so the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeAlias

from ddecomp.errors import UserError

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup
    from torch.distributed.device_mesh import DeviceMesh

    WorldSpec: TypeAlias = "World | ProcessGroup | DeviceMesh | None"
else:
    WorldSpec = Any


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

    @classmethod
    def data_parallel(
        cls,
        group: ProcessGroup | DeviceMesh,
        dim: str | int | None = None,
        num_workers: int = 0,
        env: Mapping[str, str] | None = None,
    ) -> World:
        """This process's place among the data-parallel replicas: its rank and size in
        ``group``, a ``torch.distributed`` process group, or in dimension ``dim`` of a
        ``DeviceMesh`` (a 1-D mesh such as ``mesh["dp"]`` needs no ``dim``). ``local_rank`` (the
        GPU) still comes from torchrun's ``LOCAL_RANK``."""
        import torch.distributed as dist
        from torch.distributed.device_mesh import DeviceMesh

        env = os.environ if env is None else env
        try:
            local_rank = int(env.get("LOCAL_RANK", "0"))
        except ValueError as e:
            raise UserError(f"LOCAL_RANK must be an integer: {e}") from None
        if isinstance(group, DeviceMesh):
            if dim is None and group.ndim != 1:
                raise UserError(
                    f"a {group.ndim}-D DeviceMesh needs dim= (its data-parallel dimension, one "
                    f"of {group.mesh_dim_names}); or pass the 1-D mesh['dp']"
                )
            names = list(group.mesh_dim_names or ())
            if isinstance(dim, str) and dim not in names:
                raise UserError(f"the DeviceMesh has no dimension {dim!r}; it has {names}")
            d = names.index(dim) if isinstance(dim, str) else (dim or 0)
            return cls(group.get_local_rank(d), group.size(d), local_rank, num_workers)
        if dim is not None:
            raise UserError("dim= applies to a DeviceMesh, not to a process group")
        if not (dist.is_available() and dist.is_initialized()):
            raise UserError("a data-parallel process group needs torch.distributed initialized")
        rank = dist.get_rank(group)
        if rank < 0:
            raise UserError("this process is not a member of the data-parallel group it passed")
        return cls(rank, dist.get_world_size(group), local_rank, num_workers)

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


def as_world(spec: WorldSpec) -> World:
    """A loader's ``world`` argument as a :class:`World`: ``None`` detects it
    (:meth:`World.detect`), a World is kept, a process group or ``DeviceMesh`` is the
    data-parallel group (:meth:`World.data_parallel`)."""
    if spec is None:
        return World.detect()
    if isinstance(spec, World):
        return spec
    import torch.distributed as dist
    from torch.distributed.device_mesh import DeviceMesh

    is_group = dist.is_available() and isinstance(spec, dist.ProcessGroup)
    if is_group or isinstance(spec, DeviceMesh):
        return World.data_parallel(spec)
    raise UserError(
        f"world must be a ddecomp.World, a data-parallel process group or a DeviceMesh, not "
        f"{type(spec).__name__}"
    )
