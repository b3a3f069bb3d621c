"""Flags of an already-tokenized input that cannot be right, refused before anything is written.

An EOS the input's dtype cannot hold, or none in the first :data:`EOS_PROBE_TOKENS` tokens (a
wrong ``--eos-id``, or a file read with the wrong ``--dtype``, which would otherwise be one
garbage document), a negative id or one beyond uint32, and an id at or above a given
``vocab_size``.
"""

from __future__ import annotations

import numpy as np

from ddecomp.errors import UserError
from ddecomp.preparing.config import TokensConfig

EOS_PROBE_TOKENS = 1 << 24  # an input with no EOS in its first 16M tokens is refused


def check_tokens(cfg: TokensConfig, arr: np.ndarray, what: str) -> int | None:
    """Refuse flags that cannot be right for this input; return its largest id if computed.

    An EOS the input's dtype cannot hold, or none in the first :data:`EOS_PROBE_TOKENS` tokens
    (a wrong ``--eos-id``, or a file read with the wrong ``--dtype``, which would otherwise be
    one garbage document), and an id at or above a given ``vocab_size``. The largest id is read
    only when it is needed: a uint8/uint16 input always fits the uint16 we store.
    """
    eos = cfg.eos_id
    if arr.dtype.kind not in "ui":
        raise UserError(f"{what}: dtype {arr.dtype.name} is not an integer type; check --dtype")
    top = int(np.iinfo(arr.dtype).max)
    if eos > top:
        raise UserError(
            f"--eos-id {eos} cannot occur in {what}: its dtype {arr.dtype.name} holds ids up to "
            f"{top}; check --eos-id (and --dtype for a raw file)"
        )
    probe = arr[:EOS_PROBE_TOKENS]
    if not np.any(probe == eos):
        raise UserError(
            f"{what}: no --eos-id {eos} in its first {probe.size:,} tokens (read as "
            f"{arr.dtype.name}); check --dtype (the file's integer type) and --eos-id"
        )
    max_id = None
    if cfg.vocab_size is not None or arr.dtype.itemsize > 2 or arr.dtype.kind != "u":
        lo, max_id = int(arr.min()), int(arr.max())
        if lo < 0:
            raise UserError(f"{what} has a negative id ({lo}); check --dtype")
        if max_id >= 1 << 32:
            raise UserError(f"{what} has id {max_id}, beyond uint32; check --dtype")
    if cfg.vocab_size is not None:
        assert max_id is not None
        if max_id >= cfg.vocab_size:
            raise UserError(
                f"{what} has id {max_id}, not below --vocab-size {cfg.vocab_size}; pass the "
                "tokenizer's vocabulary size (or check --dtype)"
            )
    return max_id
