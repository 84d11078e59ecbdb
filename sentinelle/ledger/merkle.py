"""The Merkle tree of Certificate Transparency (RFC 9162 §2.1): hashing, appends, proofs.

Why CT's tree and not a plain hash chain: a chain proves order but a reader must replay
all of it; the tree gives the same tamper evidence plus O(log n) inclusion proofs (this
event is in the ledger whose signed root is R) and consistency proofs (the ledger of
size m is a prefix of the ledger of size n), so an auditor or a witness checks a claim
without the whole ledger. Leaves are SHA-256(0x00 || bytes) and nodes
SHA-256(0x01 || left || right), exactly as RFC 9162, so any CT verifier can check proofs.

Appends keep only the compact frontier (one hash per set bit of the tree size, O(log n));
proofs read hashes through a `subtree(lo, hi)` function the ledger backs with its store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "NODE_LEVEL",
    "Frontier",
    "consistency_path",
    "consistency_ranges",
    "inclusion_path",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

_sha256 = hashlib.sha256

#: Root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT = _sha256(b"").digest()

#: Complete subtrees of 2**NODE_LEVEL leaves and above are stored by the ledger, so a
#: proof reads at most one chunk of 256 leaf hashes plus O(log n) stored nodes. Measured
#: (docs/ledger.md): without stored nodes a proof in a 1M-event ledger rehashes ~1M leaves.
NODE_LEVEL = 8


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """Merkle tree hash (MTH) of a list of leaf hashes; the reference the frontier must match."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    # Pairing left to right and carrying an odd last node up unchanged gives the same
    # tree as RFC 9162's recursive split at the largest power of two.
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class Frontier:
    """The compact right edge of the tree: appends in O(1) amortised, root in O(log n).

    `hashes[i]` is the root of a complete subtree; their sizes are the set bits of `size`
    from the highest down. `completed` collects (level, index, hash) of every complete
    subtree of level >= `keep_level` finished since the last `take_completed()`, so the
    ledger can store them for fast proofs.
    """

    __slots__ = ("completed", "hashes", "keep_level", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = (), keep_level: int = NODE_LEVEL) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a frontier of size {size} has {bin(size).count('1')} hashes, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)
        self.keep_level = keep_level
        self.completed: list[tuple[int, int, bytes]] = []

    def copy(self) -> Frontier:
        """An independent copy (the ledger rolls back to it when a batch fails)."""
        other = Frontier(self.size, self.hashes, self.keep_level)
        other.completed = list(self.completed)
        return other

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash."""
        size = self.size
        hashes = self.hashes
        h = leaf
        level = 0
        # Each trailing one bit of the size is a complete subtree that the new leaf closes.
        while size >> level & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            level += 1
            if level >= self.keep_level:
                self.completed.append((level, size >> level, h))
        hashes.append(h)
        self.size = size + 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Add many leaf hashes (the hot path of a batch append).

        Works level by level over the whole batch: pairs are hashed in one comprehension
        per level instead of a loop per leaf, about a third less Python work per leaf.
        """
        if not leaves:
            return
        stack = self.hashes
        keep = self.keep_level
        carry = list(leaves)
        start = self.size  # index of carry[0] at the current level
        level = 0
        leftovers: list[bytes] = []  # frontier entries below the untouched part, low level first
        sha = _sha256
        while carry:
            if start & 1:
                # The frontier's lowest entry is the left sibling of the first carried node.
                carry.insert(0, stack.pop())
                start -= 1
            n = len(carry)
            if n & 1:
                leftovers.append(carry[-1])
            nxt = [sha(b"\x01" + carry[i] + carry[i + 1]).digest() for i in range(0, n - 1, 2)]
            level += 1
            start >>= 1
            if level >= keep:
                self.completed.extend((level, start + j, h) for j, h in enumerate(nxt))
            carry = nxt
        stack.extend(reversed(leftovers))
        self.size += len(leaves)

    def take_completed(self) -> list[tuple[int, int, bytes]]:
        """Complete subtrees finished since the last call, then forget them."""
        out = self.completed
        self.completed = []
        return out

    def root(self) -> bytes:
        """Merkle tree hash of the leaves appended so far."""
        if not self.hashes:
            return EMPTY_ROOT
        r = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            r = _sha256(b"\x01" + h + r).digest()
        return r


Subtree = Callable[[int, int], bytes]


def inclusion_path(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1: the audit path of one leaf."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    # Walk down from the root, noting the sibling at each split; the RFC lists the
    # siblings bottom-up, hence the reverse at the end.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_path(first: int, second: int, subtree: Subtree) -> list[bytes]:
    """PROOF(first, D[0:second]) of RFC 9162 §2.1.4.1: the prefix of size first is kept."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first == second:
        return []
    path: list[bytes] = []
    m, lo, hi, whole = first, 0, second, True
    while True:
        n = hi - lo
        if m == n:
            if not whole:
                path.append(subtree(lo, hi))
            break
        k = _split(n)
        if m <= k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            m -= k
            lo += k
            whole = False
    path.reverse()
    return path


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The [lo, hi) leaf ranges whose hashes `inclusion_path` will ask for (to prefetch them)."""
    ranges: list[tuple[int, int]] = []

    def note(lo: int, hi: int) -> bytes:
        ranges.append((lo, hi))
        return b""

    inclusion_path(index, size, note)
    return ranges


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The [lo, hi) leaf ranges whose hashes `consistency_path` will ask for."""
    ranges: list[tuple[int, int]] = []

    def note(lo: int, hi: int) -> bytes:
        ranges.append((lo, hi))
        return b""

    consistency_path(first, second, note)
    return ranges


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does `path` prove leaf hash `leaf` at `index` in the tree of `root`?"""
    if index >= size or index < 0:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does `path` prove the tree of size `first` is a prefix of `second`?"""
    if first < 0 or first > second:
        return False
    if first == second:
        return not path and first_root == second_root
    if first == 0:
        # Every tree extends the empty tree; RFC 9162 defines no proof for it.
        return not path
    if not path:
        return False
    nodes = list(path)
    if first & (first - 1) == 0:
        nodes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0
