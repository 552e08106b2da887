"""Engine switches of NMS and soft-NMS: every path equals the plain loop exactly, on both sides of each
switch (dense/spatial size cut-off for hard NMS; packed components / graph rounds / sequential loop for
soft-NMS, with many tiny components and one giant component)."""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nms_references import assert_soft_scores, ref_iou, ref_nms, ref_soft_nms

from visionkit.ops._overlap_pairs import connected_components, overlap_pairs, sweep_pairs
from visionkit.ops.nms import batched_nms, nms
from visionkit.ops.soft_nms import batched_soft_nms, soft_nms

nms_module = importlib.import_module("visionkit.ops.nms")  # `ops.nms` is the function
soft_module = importlib.import_module("visionkit.ops.soft_nms")
pairs_module = importlib.import_module("visionkit.ops._overlap_pairs")
pytestmark = pytest.mark.usefixtures("torch_engines")  # these are the PyTorch engines' paths


def clustered(num_boxes: int, seed: int, per_object: int = 20, spread: float = 300.0, num_labels: int = 1):
    g = torch.Generator().manual_seed(seed)
    num_objects = max(1, num_boxes // per_object)
    centres = torch.rand(num_objects, 2, generator=g, dtype=torch.float64) * spread
    sizes = 8 + torch.rand(num_objects, 2, generator=g, dtype=torch.float64) * 40
    owner = torch.randint(num_objects, (num_boxes,), generator=g)
    wh = sizes[owner] * torch.exp(torch.randn(num_boxes, 2, generator=g, dtype=torch.float64) * 0.15)
    c = centres[owner] + torch.randn(num_boxes, 2, generator=g, dtype=torch.float64) * 0.15 * sizes[owner]
    boxes = torch.cat((c - wh / 2, c + wh / 2), dim=1)
    scores = torch.rand(num_boxes, generator=g, dtype=torch.float64)
    return boxes, scores, torch.randint(num_labels, (num_boxes,), generator=g)


# ---------------------------------------------------------------- hard NMS: dense/spatial size switch
@pytest.mark.parametrize("offset", [0, 1])
def test_nms_both_sides_of_dense_cutoff(offset):
    num_boxes = nms_module._DENSE_MAX + offset
    boxes, scores, labels = clustered(num_boxes, seed=offset, num_labels=3)
    assert nms(boxes, scores, 0.5).tolist() == ref_nms(boxes, scores, 0.5)
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == ref_nms(boxes, scores, 0.5, labels)


def test_nms_engines_agree_when_cutoff_is_moved(monkeypatch):
    boxes, scores, labels = clustered(1000, seed=4, num_labels=5)
    # tied scores exercise the stable order on every engine
    tied = torch.floor(scores * 8) / 8
    want = ref_nms(boxes, tied, 0.45)
    want_batched = ref_nms(boxes, tied, 0.45, labels)
    for cutoff in (0, 10_000):  # 0: spatial/sparse engines; 10 000: dense engine
        monkeypatch.setattr(nms_module, "_DENSE_MAX", cutoff)
        assert nms(boxes, tied, 0.45).tolist() == want
        assert batched_nms(boxes, tied, labels, 0.45, strategy="offset").tolist() == want_batched


# ---------------------------------------------------------------- building blocks of the soft-NMS paths
def ref_components(num_nodes: int, first: list[int], second: list[int]) -> list[int]:
    """Plain union–find; every node labelled with its component's smallest id."""
    parent = list(range(num_nodes))

    def root(node: int) -> int:
        while parent[node] != node:
            node = parent[node]
        return node

    for a, b in zip(first, second, strict=True):
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)
    return [root(node) for node in range(num_nodes)]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(st.tuples(*[st.integers(0, n - 1)] * 2)))
    )
)
def test_connected_components_equal_union_find(graph):
    num_nodes, edges = graph
    first = torch.tensor([a for a, _ in edges], dtype=torch.int64)
    second = torch.tensor([b for _, b in edges], dtype=torch.int64)
    got = connected_components(num_nodes, first, second)
    assert got.tolist() == ref_components(num_nodes, first.tolist(), second.tolist())


def test_connected_components_long_chain_and_star():
    chain = torch.arange(299)
    assert connected_components(300, chain + 1, chain).tolist() == [0] * 300  # reversed chain
    star = torch.arange(1, 50)
    label = connected_components(60, torch.full_like(star, 49), star - 1)
    assert label.tolist() == [0] * 50 + list(range(50, 60))


def dense_pairs(boxes: torch.Tensor, threshold: float) -> list[tuple[int, int, float]]:
    rows = boxes.tolist()
    return [
        (i, j, ref_iou(rows[i], rows[j]))
        for i in range(len(rows))
        for j in range(i + 1, len(rows))
        if ref_iou(rows[i], rows[j]) > threshold
    ]


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7])
def test_sweep_pairs_equal_dense_pairs_and_grid(threshold):
    boxes, _, _ = clustered(600, seed=2)
    # adversarial rows: equal x1 (ties in the sort), zero-area, inverted and one image-wide box
    extra = torch.tensor(
        [[10.0, 10, 30, 30], [10, 12, 30, 32], [10, 10, 10, 40], [50, 50, 40, 60], [0, 100, 400, 140]],
        dtype=torch.float64,
    )
    boxes = torch.cat((boxes, extra))
    first, second, iou = sweep_pairs(boxes, threshold)
    got = sorted(zip(first.tolist(), second.tolist(), iou.tolist(), strict=True))
    assert got == dense_pairs(boxes, threshold)
    grid = overlap_pairs(boxes, threshold)
    assert got == sorted(zip(*(part.tolist() for part in grid), strict=True))


def test_sweep_pairs_gives_way_when_over_budget(monkeypatch):
    boxes, _, _ = clustered(300, seed=3)
    monkeypatch.setattr(pairs_module, "SWEEP_BUDGET", 10)
    assert sweep_pairs(boxes, 0.3) is None
    monkeypatch.setattr(pairs_module, "SWEEP_BUDGET", 1 << 23)
    monkeypatch.setattr(pairs_module, "EDGE_BUDGET", 10)
    assert sweep_pairs(boxes, 0.3) is None
    assert sweep_pairs(boxes[:0], 0.3)[0].numel() == 0


def test_pack_limit_respects_budget_and_ties(monkeypatch):
    monkeypatch.setattr(soft_module, "PACK_BUDGET", 100)
    assert soft_module._pack_limit(torch.tensor([2, 3, 5, 9])) == 5  # 3 components of <= 5: 75 <= 100
    assert soft_module._pack_limit(torch.tensor([5, 5, 5, 5, 5])) == 4  # 5 × 25 > 100: none of size 5
    assert soft_module._pack_limit(torch.tensor([20])) == 1


# ---------------------------------------------------------------- soft-NMS: every path equals the loop
def assert_soft_matches(got, want, method):
    """Same selections as the loop; scores within the bound derived in :func:`assert_soft_scores`."""
    keep, decayed = got
    assert keep.tolist() == want[0]
    assert_soft_scores(decayed, want[1], want[2], method)


PATHS = {
    "default": {},
    "all_big_scalar": {"PACK_MAX_SIZE": 1},
    "all_big_loop": {"PACK_MAX_SIZE": 1, "BIG_COMPONENTS": "loop"},
    "all_big_rounds": {"PACK_MAX_SIZE": 1, "BIG_COMPONENTS": "rounds"},
    "mixed_rounds": {"PACK_MAX_SIZE": 12, "BIG_COMPONENTS": "rounds"},
    "all_packed": {"PACK_MAX_SIZE": 10_000, "PACK_BUDGET": 1 << 26},
    "mixed": {"PACK_MAX_SIZE": 12},
}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("layout", ["tiny_components", "giant_component"])
def test_soft_nms_paths_equal_loop(monkeypatch, path, method, layout):
    for name, value in PATHS[path].items():
        monkeypatch.setattr(soft_module, name, value)
    if layout == "tiny_components":  # ~3 boxes per object, spread far apart: many small components
        boxes, scores, _ = clustered(300, seed=5, per_object=3, spread=3000.0)
    else:  # everything overlaps everything nearby: one component holds nearly all boxes
        boxes, scores, _ = clustered(250, seed=6, per_object=50, spread=40.0)
    scores = torch.floor(scores * 16) / 16  # ties
    assert_soft_matches(soft_nms(boxes, scores, method), ref_soft_nms(boxes, scores, method), method)


def test_soft_nms_sweep_and_grid_paths_agree(monkeypatch):
    boxes, scores, labels = clustered(400, seed=7, num_labels=3)
    want = ref_soft_nms(boxes, scores, "linear")
    assert_soft_matches(soft_nms(boxes, scores, "linear"), want, "linear")
    monkeypatch.setattr(pairs_module, "SWEEP_BUDGET", 0)  # the grid enumerates the pairs instead
    assert_soft_matches(soft_nms(boxes, scores, "linear"), want, "linear")
    want = ref_soft_nms(boxes, scores, "gaussian", labels=labels)
    assert_soft_matches(batched_soft_nms(boxes, scores, labels, "gaussian"), want, "gaussian")


def test_negative_scores_use_the_loop():
    # a linear decay raises a negative score, so the selections are not monotone: the plain loop runs
    boxes = torch.tensor(
        [[0.0, 0, 10, 10], [0, 0, 10, 9], [1, 0, 11, 10], [30, 30, 40, 40]], dtype=torch.float64
    )
    scores = torch.tensor([-0.1, -0.2, -0.25, -0.3], dtype=torch.float64)
    for method in ("linear", "gaussian"):
        want = ref_soft_nms(boxes, scores, method, score_threshold=-1.0)
        assert_soft_matches(soft_nms(boxes, scores, method, score_threshold=-1.0), want, method)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(*[st.integers(0, 30)] * 2, *[st.integers(-1, 12)] * 2, st.integers(0, 4)), max_size=40
    ),
    st.sampled_from(["linear", "gaussian"]),
    st.sampled_from([1, 3, 10_000]),
    st.sampled_from(["scalar", "loop", "rounds"]),
)
def test_soft_nms_paths_hypothesis(rows, method, pack_max, big_engine):
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h, _ in rows], dtype=torch.float64).reshape(-1, 4)
    scores = torch.tensor([s / 4 for *_, s in rows], dtype=torch.float64)
    saved = soft_module.PACK_MAX_SIZE, soft_module.BIG_COMPONENTS
    soft_module.PACK_MAX_SIZE, soft_module.BIG_COMPONENTS = pack_max, big_engine
    try:
        got = soft_nms(boxes, scores, method, score_threshold=0.05)
    finally:
        soft_module.PACK_MAX_SIZE, soft_module.BIG_COMPONENTS = saved
    assert_soft_matches(got, ref_soft_nms(boxes, scores, method, score_threshold=0.05), method)
