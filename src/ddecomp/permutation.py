"""Seeded bijections on ``[0, n)`` in O(1) memory: a keyed Feistel network with cycle-walking.

A plan serves bucket L's rows in a seeded order; materialising that order as an int64
permutation costs 8 bytes per row (11 GB per process at 10^12 tokens). :class:`Permutation`
instead computes the row at any position directly, vectorised over a batch's positions:

- the domain ``[0, 2^(2h))`` is the smallest even power of two >= n (``2^(2h) < 4n``); a
  position ``x`` is split into halves ``(l, r)`` of ``h`` bits and put through ``ROUNDS``
  Feistel rounds ``(l, r) -> (r, l ^ F_k(r))`` (``SMALL_ROUNDS`` for ``n <= 2^16``), each a
  bijection of the domain whatever ``F``;
- ``F_k(r)`` is the top ``h`` bits of a multiply-xorshift-multiply hash of ``r`` xor the
  round's 64-bit key (splitmix64's constants); the keys come from
  ``numpy.random.SeedSequence(key)``, so the order is a pure function of the key
  (``(seed, epoch, L, pass)`` for a plan);
- cycle-walking: a result ``>= n`` is put through the network again until it lands in
  ``[0, n)``; as the network is a bijection of the domain, this restricts it to a bijection of
  ``[0, n)`` (the walk from an element of ``[0, n)`` returns to ``[0, n)`` before it cycles).
  Fewer than 4 network passes are expected per position (the domain is < 4n); the walk always
  ends, as the cycle through a position holds that position.

Memory: a few arrays the size of the positions asked for, nothing per row of a bucket above
2^20 rows (below, a table bounded per process, see the fast paths below). Speed,
measured on a 2-core AMD EPYC (2026-12-02, best of 20, n = 10^6 and 10^9): 11-12 ns per
position, a block of 16,384 positions (what a plan computes at once) in 0.18 ms; a loaded
machine measured up to 10x that. A step's few rows (a blend's fractional window asks 8-256
positions per step) are another matter: a numpy pass costs 17 us (4 rounds) to 55 us (8 rounds)
however few its elements, and the walk's longest chain sets the number of passes (16 positions
of n = 20,000, domain 65,536: ~16 passes, 900 us). Hence two fast paths, both serving the same
values (``tests/test_permutation.py`` pins the released order): positions still walking once
at most ``_PY_WALK`` remain go one by one in Python integers (1.3-2.9 us a pass), and a
bijection of at most 2^20 values is tabulated (uint16 or uint32, at most 4 MiB) once walks for
``n / 16`` of its positions were asked, and looked up from then on (tables kept per process up to
48 MiB, least recently used dropped). Measured 2026-12-03 here, 16 positions: n = 20,000 900 ->
4 us, n = 300,000 ~270 -> 74 us walking, ~4 us tabulated; n = 10^9 23 us (unchanged); a two-source
blend epoch (``bench_loader.py``, 200M tokens) 46-50M -> 147-278M tokens/s.

Quality: four rounds (eight for n <= 2^16) of a 64-bit mixer; ``tests/test_permutation.py`` checks
bijectivity (hypothesis, small n) and that positions and rows are uncorrelated and first rows
uniform for n from 1 to 10^7 (primes and powers of two included). It is a shuffle for training
order, not a cryptographic permutation. ``ORDER_VERSION`` names this order in loader states (field
``order``): 1 was numpy's ``Generator.permutation`` materialised per bucket, 2 is this network. A
state without the field (order 1) or with another order is refused in one line by
:func:`check_order`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ddecomp.errors import UserError

ORDER_VERSION = 2  # 1: materialised numpy permutations; 2: this Feistel network
ROUNDS = 4  # Luby-Rackoff: four rounds of a good round function are a strong PRP
SMALL_ROUNDS = 8  # halves of <= 8 bits (n <= 2^16): few round functions exist, mix longer
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S = np.uint64(31)
_I1, _I2, _MASK64 = int(_M1), int(_M2), (1 << 64) - 1  # the same constants, Python ints
_TABLE_MAX = 1 << 20  # a bijection of at most this many values is tabulated once reused ...
_TABLE_SHARE = 16  # ... after n / 16 positions were walked for it (the table costs ~n walks)
_TABLE_BUDGET = 48 << 20  # bytes of tables kept per process, least recently used dropped
_PY_WALK = 16  # at most this many positions walk in Python (break-even with a numpy pass)


@dataclass(frozen=True)
class Permutation:
    """A seeded bijection of ``[0, n)``; ``perm(positions)`` maps positions to values."""

    n: int
    key: tuple[int, ...]
    _half: int = field(init=False, repr=False)
    _keys: tuple[np.uint64, ...] = field(init=False, repr=False)
    _ints: tuple[int, ...] = field(init=False, repr=False)  # the same keys as Python ints
    _walked: list[int] = field(init=False, repr=False, compare=False)  # [positions walked]

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"n {self.n!r} must be an integer >= 0")
        if self.n >= 1 << 62:
            raise ValueError(f"n {self.n} is above 2^62")
        bits = max(2, (self.n - 1).bit_length()) if self.n > 1 else 2
        half = (bits + 1) // 2
        rounds = SMALL_ROUNDS if half <= 8 else ROUNDS
        words = np.random.SeedSequence([int(k) for k in self.key]).generate_state(rounds, np.uint64)
        object.__setattr__(self, "_half", half)
        object.__setattr__(self, "_keys", tuple(np.uint64(w) for w in words))
        object.__setattr__(self, "_ints", tuple(int(w) for w in words))
        object.__setattr__(self, "_walked", [0])

    def _network(self, x: np.ndarray) -> np.ndarray:
        """One pass of the network over the domain (in place where numpy allows)."""
        h = self._half
        left, right = x >> np.uint64(h), x & np.uint64((1 << h) - 1)
        f, g = np.empty_like(x), np.empty_like(x)
        top = np.uint64(64 - h)
        for k in self._keys:  # F_k(r): the top h bits of a multiply-xorshift-multiply hash
            np.bitwise_xor(right, k, out=f)
            np.multiply(f, _M1, out=f)
            np.right_shift(f, _S, out=g)
            np.bitwise_xor(f, g, out=f)
            np.multiply(f, _M2, out=f)
            np.right_shift(f, top, out=f)
            np.bitwise_xor(left, f, out=left)
            left, right = right, left
        np.left_shift(left, np.uint64(h), out=left)
        np.bitwise_or(left, right, out=left)
        return left

    def _walk(self, x: int) -> int:
        """The cycle-walk of one domain value in Python integers: the same network as
        :meth:`_network` (64-bit wrap-around by masking), ~1.3 us per pass with 4 rounds and
        ~2.9 us with 8 against 17-55 us for a numpy pass however few its elements."""
        h, n = self._half, self.n
        low, top = (1 << h) - 1, 64 - h
        while True:
            left, right = x >> h, x & low
            for k in self._ints:
                f = ((right ^ k) * _I1) & _MASK64
                f = (((f ^ (f >> 31)) * _I2) & _MASK64) >> top
                left, right = right, left ^ f
            x = (left << h) | right
            if x < n:
                return x

    def __call__(self, positions: np.ndarray | int) -> np.ndarray:
        """The values at ``positions`` (any shape, each in ``[0, n)``) as int64."""
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (int(pos.min()) < 0 or int(pos.max()) >= self.n):
            raise IndexError(f"position out of range for a permutation of {self.n}")
        if self.n <= 1:
            return pos.copy()
        if self.n <= _TABLE_MAX:
            table = _TABLES.get((self.n, self.key))
            if table is None:
                self._walked[0] += pos.size
                # Tabulate once the walks asked for would have paid for it. The count restarts,
                # so a table the budget dropped is rebuilt only after as many walks again: at
                # worst the table's cost doubles the walking, it never thrashes.
                if self._walked[0] * _TABLE_SHARE >= self.n:
                    self._walked[0] = 0
                    table = _TABLES.put((self.n, self.key), self._tabulate())
            if table is not None:
                return table[pos].astype(np.int64)
        return self._compute(pos)

    def _tabulate(self) -> np.ndarray:
        """Every value, as the smallest unsigned type that holds them: uint16 up to 2^16 values
        (128 KiB), uint32 up to 2^20 (4 MiB); ~12 ns a value by the vectorised walk."""
        dtype = np.uint16 if self.n <= 1 << 16 else np.uint32
        return self._compute(np.arange(self.n, dtype=np.int64)).astype(dtype)

    def _compute(self, pos: np.ndarray) -> np.ndarray:
        n = np.uint64(self.n)
        flat = pos.astype(np.uint64).ravel()
        if flat.size <= _PY_WALK:  # a few positions: the Python walk beats any numpy pass
            vals = [self._walk(v) for v in flat.tolist()]
            return np.array(vals, dtype=np.int64).reshape(pos.shape)
        out = self._network(flat)
        todo = np.flatnonzero(out >= n)
        # Walks end geometrically (each pass lands in [0, n) with odds n / domain > 1/4), so
        # after a few numpy passes only a handful of positions walk on: those go one by one in
        # Python rather than through another ~56 numpy calls each (16 positions of n = 20,000:
        # 900 us -> ~100 us measured, 2026-12-03).
        while todo.size > _PY_WALK:
            y = self._network(out[todo])
            out[todo] = y
            todo = todo[y >= n]
        for i in todo.tolist():
            out[i] = self._walk(int(out[i]))
        return out.astype(np.int64).reshape(pos.shape)


class _TableCache:
    """Tabulated bijections by ``(n, key)``, at most ``budget`` bytes, least recently used
    dropped first; thread-safe (a remote dataset's prefetch threads share the process)."""

    def __init__(self, budget: int) -> None:
        self.budget, self.bytes = budget, 0
        self._tables: OrderedDict[tuple[int, tuple[int, ...]], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, tuple[int, ...]]) -> np.ndarray | None:
        with self._lock:
            table = self._tables.get(key)
            if table is not None:
                self._tables.move_to_end(key)
            return table

    def put(self, key: tuple[int, tuple[int, ...]], table: np.ndarray) -> np.ndarray:
        with self._lock:
            if key not in self._tables:
                self._tables[key] = table
                self.bytes += table.nbytes
            while self.bytes > self.budget and len(self._tables) > 1:
                _, old = self._tables.popitem(last=False)
                self.bytes -= old.nbytes
            return self._tables.get(key, table)


_TABLES = _TableCache(_TABLE_BUDGET)
# A process forked while another thread held the lock (a loader iterated in a background thread
# as DataLoader workers start) would inherit it locked forever: the child starts with a new one.
os.register_at_fork(after_in_child=lambda: setattr(_TABLES, "_lock", threading.Lock()))


@lru_cache(maxsize=1024)
def permutation(n: int, *key: int) -> Permutation:
    """The bijection of ``[0, n)`` keyed by ``key`` (cached: the round keys are derived once)."""
    return Permutation(int(n), tuple(int(k) for k in key))


def check_order(order: object) -> None:
    """Refuse a loader state written with another row order (a state without ``order`` is 1)."""
    if order != ORDER_VERSION or type(order) is not int:
        raise UserError(
            f"cannot resume: the loader state's row order is {order!r} (1: numpy permutations, "
            f"ddecomp before the O(1)-memory order) but this ddecomp serves order {ORDER_VERSION}; "
            "the remaining rows would differ: finish the run with the ddecomp that wrote it, "
            "or start it again"
        )
