"""The Merkle tree matches RFC 6962/9162: known answers, every proof shape, and forged proofs fail."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinelle.ledger import merkle

# Certificate Transparency's reference inputs and tree heads (RFC 6962 test vectors).
CT_INPUTS = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [  # (0-based index, size, path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CT_CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CT_LEAVES = [merkle.leaf_hash(d) for d in CT_INPUTS]


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, written as the RFC's recursion (independent of root_of)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def sub_of(leaves: list[bytes]) -> merkle.Subtree:
    return lambda lo, hi: mth(leaves[lo:hi])


def leaves_n(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [merkle.leaf_hash(rng.randbytes(rng.randint(0, 12))) for _ in range(n)]


def test_roots_match_the_ct_reference() -> None:
    f = merkle.Frontier()
    assert f.root().hex() == CT_ROOTS[0]
    for n in range(1, 9):
        f.append(CT_LEAVES[n - 1])
        assert f.root().hex() == CT_ROOTS[n]
        assert merkle.root_of(CT_LEAVES[:n]).hex() == CT_ROOTS[n]
        assert mth(CT_LEAVES[:n]).hex() == CT_ROOTS[n]


def test_inclusion_proofs_match_the_ct_reference() -> None:
    for index, size, path in CT_INCLUSION:
        got = merkle.inclusion_path(index, size, sub_of(CT_LEAVES))
        assert [h.hex() for h in got] == path
        root = bytes.fromhex(CT_ROOTS[size])
        assert merkle.verify_inclusion(CT_LEAVES[index], index, size, got, root)
        assert not merkle.verify_inclusion(CT_LEAVES[index], index, size, got, bytes.fromhex(CT_ROOTS[size - 1]))


def test_consistency_proofs_match_the_ct_reference() -> None:
    for first, second, path in CT_CONSISTENCY:
        got = merkle.consistency_path(first, second, sub_of(CT_LEAVES))
        assert [h.hex() for h in got] == path
        r1, r2 = bytes.fromhex(CT_ROOTS[first]), bytes.fromhex(CT_ROOTS[second])
        assert merkle.verify_consistency(first, second, r1, r2, got)
        assert not merkle.verify_consistency(first, second, r2, r2, got)


def test_every_proof_shape_up_to_40_leaves() -> None:
    leaves = leaves_n(40)
    sub = sub_of(leaves)
    for size in range(1, 41):
        root = mth(leaves[:size])
        for i in range(size):
            path = merkle.inclusion_path(i, size, sub)
            assert merkle.verify_inclusion(leaves[i], i, size, path, root)
            # The same path does not prove another leaf or another index. (It may fit another
            # size: the signed checkpoint, not the path, binds the size.)
            other = leaves[(i + 1) % size] if size > 1 else merkle.leaf_hash(b"x")
            assert not merkle.verify_inclusion(other, i, size, path, root)
            if size > 1:
                assert not merkle.verify_inclusion(leaves[i], (i + 1) % size, size, path, root)
        for first in range(1, size + 1):
            path = merkle.consistency_path(first, size, sub)
            r1 = mth(leaves[:first])
            assert merkle.verify_consistency(first, size, r1, root, path)
            if first < size:
                forged = [bytes(32), *path[1:]]
                assert not merkle.verify_consistency(first, size, r1, root, forged)
                assert not merkle.verify_consistency(first, size, merkle.leaf_hash(b"y"), root, path)


def test_frontier_collects_complete_subtrees_and_restarts() -> None:
    leaves = leaves_n(1100, seed=3)
    f = merkle.Frontier(keep_level=8)
    f.extend(leaves[:700])
    done = f.take_completed()
    assert [(lv, ix) for lv, ix, _ in done] == [(8, 0), (8, 1), (9, 0)]
    assert all(h == mth(leaves[ix << lv:(ix + 1) << lv]) for lv, ix, h in done)
    # A frontier rebuilt from subtree roots continues identically (the ledger does this on open).
    g = merkle.Frontier(700, [mth(leaves[:512]), mth(leaves[512:640]), mth(leaves[640:672]),
                              mth(leaves[672:688]), mth(leaves[688:696]), mth(leaves[696:700])])
    f.extend(leaves[700:])
    g.extend(leaves[700:])
    assert f.root() == g.root() == mth(leaves)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.data())
def test_random_sizes_prove_and_fail_when_forged(size: int, data: st.DataObject) -> None:
    leaves = leaves_n(size, seed=size)
    sub = sub_of(leaves)
    f = merkle.Frontier()
    f.extend(leaves)
    root = f.root()
    assert root == mth(leaves)
    i = data.draw(st.integers(0, size - 1))
    path = merkle.inclusion_path(i, size, sub)
    assert merkle.verify_inclusion(leaves[i], i, size, path, root)
    if path:
        j = data.draw(st.integers(0, len(path) - 1))
        bad = list(path)
        bad[j] = bytes(a ^ 1 for a in bad[j])
        assert not merkle.verify_inclusion(leaves[i], i, size, bad, root)
    first = data.draw(st.integers(1, size))
    cpath = merkle.consistency_path(first, size, sub)
    assert merkle.verify_consistency(first, size, mth(leaves[:first]), root, cpath)
