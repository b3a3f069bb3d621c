"""One rank of the DDTrainer DDP test (launched by torchrun): train, then write what it trained.

python -m torch.distributed.run --nproc-per-node 2 tests/integrations/_hf_ddp.py DATA OUT STEPS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: its tests package
import ddecomp
from tests.integrations._hf import TPS, Recording, hf_args, tiny_llama


def main() -> None:
    data, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    # TrainingArguments starts the process group (gloo on CPU); the loader then reads it
    args = hf_args(out / "run", save_strategy="steps", save_steps=3, ddp_backend="gloo")
    loader = ddecomp.VSLLoader(ddecomp.open_dataset(data), tokens_per_step=TPS,
                               total_tokens=steps * TPS)  # fmt: skip
    tr = Recording(model=tiny_llama(), args=args, train_loader=loader)
    tr.train()
    rows = {s: [*x.tolist()] for _, s, _, x, _, _ in tr.seen}
    losses = tr.step_losses()
    rank = loader.world.rank
    doc = {"world_size": loader.world.world_size, "rank": rank, "grad_norms": tr.grad_norms,
           "steps": [[s, len(rows[s][0]), rows[s], losses[s]] for s in sorted(rows)]}  # fmt: skip
    (out / f"rank{rank}.json").write_text(json.dumps(doc))


if __name__ == "__main__":
    main()
