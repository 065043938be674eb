"""The fixed-tree reduction (learners/reduce.py): one tree over micro-batch index at every world size."""

from __future__ import annotations

import torch

from steprl.learners.reduce import TreePlan, _Stack, tree_sum


def _leaves(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(257, generator=g) * 10 ** (k % 5) for k in range(n)]


def _by_ranks(vals: list[torch.Tensor], world_size: int) -> torch.Tensor | None:
    """What N ranks compute: each streams its subtree, then the top of the same tree over the ranks."""
    plan = TreePlan(len(vals), world_size)
    parts = []
    for r in range(world_size):
        st = _Stack()
        for k in plan.leaves_of(r):
            st.push(k, vals[k])
        parts.append(st.result())
    return tree_sum(parts)


def test_rank_assignment_is_contiguous_and_pure() -> None:
    plan = TreePlan(5, 2)
    assert plan.width == 8 and plan.leaves_of(0) == [0, 1, 2, 3] and plan.leaves_of(1) == [4]
    assert [TreePlan(5, 4).rank_of(k) for k in range(5)] == [0, 0, 1, 1, 2]
    assert TreePlan(2, 4).leaves_of(3) == []


def test_world_sizes_give_the_same_bits() -> None:
    for n in (1, 2, 3, 5, 7, 8, 13):
        vals = _leaves(n)
        padded = vals + [None] * (TreePlan(n, 1).width - n)
        ref = tree_sum(padded)
        for ws in (1, 2, 4, 8):
            out = _by_ranks(vals, ws)
            assert torch.equal(out.view(torch.int32), ref.view(torch.int32)), (n, ws)


def test_tree_order_is_not_sequential_order() -> None:
    """The tree is (g0+g1)+(g2+g3), not ((g0+g1)+g2)+g3: a documented change of the accumulation order."""
    a, b, c, d = (torch.tensor([x], dtype=torch.float32) for x in (1e8, 1.0, -1e8, 1.0))
    assert torch.equal(tree_sum([a, b, c, d]), (a + b) + (c + d))
    st = _Stack()
    for k, v in enumerate((a, b, c, d)):
        st.push(k, v)
    assert torch.equal(st.result(), (a + b) + (c + d))
