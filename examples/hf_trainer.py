"""Dataset Decomposition inside the Hugging Face Trainer: ``DDTrainer`` over ``VSLLoader``.

    pip install "ddecomp[hf]"
    python examples/hf_trainer.py data/hf           # prepares DIR if it is missing
    python examples/hf_trainer.py data/hf --resume  # continues from the last checkpoint
    torchrun --nproc-per-node 2 examples/hf_trainer.py data/hf  # DDP: same code

A missing DIR is prepared first from the default corpus (the Python standard library's sources,
nothing downloaded) with lengths 64..1024 and a 2,048-token BPE, so a tiny model trains on CPU:
about 2 CPU-minutes in all, prepare included (any prepared dataset works). The
model is a 2-layer Llama built from a config (no download); any HF causal LM works the same way.

What DDTrainer does for you: every global step of the plan is one optimizer update with the
step's own sequence length (one bucket per step, constant tokens per step); ``max_steps`` and the
LR schedule come from the plan; the loss is the step's exact token mean (also under
``gradient_accumulation_steps`` and DDP); ddecomp's labels are used as the next tokens they are
(no second shift); every ``checkpoint-N`` holds the loader state and ``--resume`` continues at
the exact next step (another number of processes works too). Settings that conflict with the
loader (``per_device_train_batch_size``, ``num_train_epochs``, ...) are refused in one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

import ddecomp
from ddecomp.integrations.hf import DDTrainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("data", help="a prepared dataset directory (prepared here if missing)")
    ap.add_argument("--out", default="runs/hf_trainer", help="Trainer output_dir (checkpoints)")
    ap.add_argument("--steps", type=int, default=40, help="global steps of the run")
    ap.add_argument("--tokens-per-step", type=int, default=2048)
    ap.add_argument("--accum", type=int, default=1, help="gradient_accumulation_steps")
    ap.add_argument("--resume", action="store_true", help="resume from the last checkpoint")
    args = ap.parse_args()

    data = Path(args.data)
    if not (data / "manifest.json").exists():
        print(f"preparing the default corpus into {data} (once) ...", flush=True)
        cfg = ddecomp.PrepareConfig(
            out=data, val_fraction=0.01, min_len=64, max_len=1024, vocab_size=2048, quiet=True
        )
        ddecomp.prepare(cfg)

    train, val = ddecomp.open_dataset(data), ddecomp.open_dataset(data, split="val")
    # held-out evaluation needs a bucket of the val split that fills one step
    evaluate = any(L * n >= args.tokens_per_step for L, n in val.bucket_rows.items())
    every = max(1, args.steps // 2)  # save twice; evaluate at the end
    # TrainingArguments first: under torchrun it starts torch.distributed, which the loader reads
    targs = TrainingArguments(
        output_dir=args.out,
        learning_rate=3e-3,
        warmup_steps=max(1, args.steps // 20),
        lr_scheduler_type="cosine",  # one cosine over the plan's steps (max_steps is set for you)
        weight_decay=0.1,
        adam_beta2=0.95,
        gradient_accumulation_steps=args.accum,
        logging_steps=10,
        save_strategy="steps",
        save_steps=every,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=args.steps,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    loader = ddecomp.VSLLoader(
        train,
        tokens_per_step=args.tokens_per_step,
        curriculum="grow-p2",
        cycles=8,
        total_tokens=args.steps * args.tokens_per_step,  # the plan is the run: len(loader) steps
    )
    # one pass over the held-out rows, the same every evaluation
    eval_loader = ddecomp.VSLLoader(val, tokens_per_step=args.tokens_per_step) if evaluate else None

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=train.vocab_size,
            hidden_size=64,
            intermediate_size=192,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=train.max_len,
            rope_parameters={"rope_type": "default", "rope_theta": 100_000.0},  # the paper's base
        )
    )
    trainer = DDTrainer(model=model, args=targs, train_loader=loader, eval_loader=eval_loader)
    out = trainer.train(resume_from_checkpoint=True if args.resume else None)
    if trainer.is_world_process_zero():
        s = loader.state_dict()
        print(
            f"done: {out.global_step} steps, train loss {out.training_loss:.3f}, lengths "
            f"{list(loader.step_lengths)}; loader state {s['epoch']}:{s['step']}"
        )


if __name__ == "__main__":
    main()
