"""Best-fit-decreasing bin packing, exact and vectorised by size: the packing baseline's bins
(:mod:`ddecomp.loading.pack`) and ``--tails pack``'s tail rows (:mod:`ddecomp.preparing.tails`).

Items are placed largest first, each into the open bin with the least room that still fits it
(best fit). Items of one size are placed as a group: open bins are kept in stacks per remaining
capacity, so a group fills ``room // size`` slots of a bin at once and the cost is
O(distinct sizes x capacity + bins) rather than O(items x bins). Pure numpy, no I/O.
"""

from __future__ import annotations

import numpy as np


def best_fit_decreasing(sizes: np.ndarray, capacity: int) -> tuple[np.ndarray, int]:
    """Bin index of every item (input order) and the number of bins; sizes in ``1..capacity``.

    Ties between equal sizes go in input order (shuffle the input to seed them)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n = sizes.size
    assert n == 0 or (int(sizes.min()) >= 1 and int(sizes.max()) <= capacity)
    order = np.argsort(-sizes, kind="stable")
    srt = sizes[order]
    bin_sorted = np.empty(n, dtype=np.int64)
    cnt = np.zeros(capacity + 1, dtype=np.int64)  # open bins per remaining capacity
    stacks: list[list[int]] = [[] for _ in range(capacity + 1)]
    nbins = 0
    bounds = np.flatnonzero(np.r_[True, srt[1:] != srt[:-1], True]) if n else np.zeros(1, int)
    for g in range(bounds.size - 1):
        i, end = int(bounds[g]), int(bounds[g + 1])
        s = int(srt[i])
        for c in (np.flatnonzero(cnt[s:]) + s).tolist():
            stack, per = stacks[c], c // s
            while stack and i < end:
                b = stack.pop()
                k = min(per, end - i)
                bin_sorted[i : i + k] = b
                i += k
                nc = c - k * s
                stacks[nc].append(b)
                cnt[c] -= 1
                cnt[nc] += 1
            if i == end:
                break
        if i < end:  # no open bin fits: new bins of capacity // s items each
            per = capacity // s
            m = end - i
            new = (m + per - 1) // per
            bin_sorted[i:end] = nbins + np.arange(m) // per
            last = m - (new - 1) * per
            full_cap, last_cap = capacity - per * s, capacity - last * s
            stacks[full_cap].extend(range(nbins, nbins + new - 1))
            stacks[last_cap].append(nbins + new - 1)
            cnt[full_cap] += new - 1
            cnt[last_cap] += 1
            nbins += new
    bins = np.empty(n, dtype=np.int64)
    bins[order] = bin_sorted
    return bins, nbins
