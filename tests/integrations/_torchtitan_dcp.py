"""Worker of test_torchtitan's DCP test (run under torchrun, gloo): torchtitan's own
CheckpointManager saves and restores DDDataLoader with a model, optimizer and LR schedule.

Usage: ``torchrun --nproc-per-node 2 _torchtitan_dcp.py DATASET_DIR RUN_DIR``; each rank writes
``RUN_DIR/rank<r>.json`` with what it saw."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torchtitan.components.checkpointer.dcp import CheckpointManager
from torchtitan.components.optimizer.lr_scheduler import LRSchedulersContainer
from torchtitan.components.optimizer.optimizer import OptimizersContainer, ParamGroupConfig

from ddecomp.integrations.torchtitan import DDDataLoader


def build(data: str, run: str, rank: int) -> tuple[DDDataLoader, Any]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    groups = [ParamGroupConfig(pattern=".*", optimizer_name="AdamW", optimizer_kwargs={"lr": 1e-3})]
    opt = OptimizersContainer.Config(param_groups=groups).build(model_parts=[model])
    sched = LRSchedulersContainer.Config().build(optimizers=opt, training_steps=10)
    loader = DDDataLoader.Config(dataset_path=data).build(
        dp_world_size=2, dp_rank=rank, tokenizer=None, seq_len=128, local_batch_size=1,
        snapshot_every_n_steps=None,
    )  # fmt: skip
    ckpt = CheckpointManager.Config(
        enable=True, folder="ckpt", interval=1, last_save_model_only=False
    ).build(
        dataloader=loader, model_parts=[model], optimizers=opt, lr_schedulers=sched, states={},
        sd_adapter=None, base_folder=run,
    )  # fmt: skip
    return loader, ckpt


def main(data: str, run: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    loader, ckpt = build(data, run, rank)
    it = iter(loader)
    for _ in range(3):
        next(it)
    ckpt.save(curr_step=3)
    ckpt.maybe_wait_for_saving()
    want = [next(it) for _ in range(4)]
    fresh, ckpt2 = build(data, run, rank)
    loaded = ckpt2.load(step=3)
    it2 = iter(fresh)
    got = [next(it2) for _ in range(4)]
    same = all(
        torch.equal(a[0]["input"], b[0]["input"])
        and torch.equal(a[0]["positions"], b[0]["positions"])
        and torch.equal(a[1], b[1])
        for a, b in zip(want, got, strict=True)
    )
    out = {
        "loaded": loaded,
        "same": same,
        "step": fresh.loader.step,
        "first": got[0][0]["input"][0, :4].tolist(),
    }
    Path(run, f"rank{rank}.json").write_text(json.dumps(out))
    ckpt.close()
    ckpt2.close()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
