"""Anchor boxes for region proposal networks (handbook §10) and k-means anchor priors (handbook §18).

An *anchor* is a reference box placed at every location of a feature map; the RPN of Faster R-CNN
(Ren et al., 2015, "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks")
puts ``k = 9`` anchors (3 sizes × 3 aspect ratios) at each location and regresses from them.

Conventions (the same as torchvision's ``AnchorGenerator``, so the two give identical anchors):

* ``aspect_ratio = height / width``; an anchor of size ``s`` and ratio ``r`` has
  ``width = s / sqrt(r)`` and ``height = s * sqrt(r)`` (area ``s²`` before rounding).
* Base (cell) anchors are centred at ``(0, 0)`` as ``[-w/2, -h/2, w/2, h/2]`` and, by default, rounded to
  integers with ``torch.round`` (half to even), as torchvision and the original py-faster-rcnn do.
  Pass ``round_base_anchors=False`` for exact sizes.
* Base-anchor order for one location: ratio-major, then size (``index = ratio_index * len(sizes) +
  size_index``).
* Feature cell ``(i, j)`` of a level with stride ``(stride_h, stride_w)`` shifts its anchors by
  ``((j + offset) * stride_w, (i + offset) * stride_h)``; ``offset = 0`` (torchvision) puts the centre at
  the cell's top-left pixel, ``offset = 0.5`` at the cell centre (detectron2 option).
* Output order: level by level; inside a level row-major over locations, then anchor (location-major).
* The stride of a level is ``image_size // feature_size`` (integer floor), per axis.

All boxes are ``xyxy`` in absolute pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "AnchorGenerator",
    "anchor_fitness",
    "fpn_anchor_generator",
    "generate_anchors",
    "generate_base_anchors",
    "grid_anchors",
    "kmeans_anchors",
    "kmeans_plus_plus_init",
    "wh_iou",
]


def _check_positive_values(values: Sequence[float], name: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of positive numbers, got {values!r}")
    for index, value in enumerate(values):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{name}[{index}] must be a positive finite number, got {value!r}")
    return tuple(float(value) for value in values)


def _check_pair(value: Sequence[int] | torch.Size, name: str, minimum: int) -> tuple[int, int]:
    if len(value) != 2 or any(isinstance(v, bool) or int(v) != v or int(v) < minimum for v in value):
        raise ValueError(
            f"{name} must be a pair of integers >= {minimum} (height, width), got {tuple(value)!r}"
        )
    return int(value[0]), int(value[1])


def generate_base_anchors(
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
    *,
    round_base_anchors: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Zero-centred anchors for one location: ``len(aspect_ratios) * len(sizes)`` boxes.

    Args:
        sizes: anchor sizes in pixels (square root of the area), e.g. ``(128, 256, 512)``.
        aspect_ratios: ``height / width`` ratios, e.g. ``(0.5, 1.0, 2.0)``.
        round_base_anchors: round the coordinates to integers (torchvision / py-faster-rcnn behaviour).
        dtype: floating dtype of the result.
        device: device of the result.

    Returns:
        ``Tensor[A, 4]`` xyxy, ``A = len(aspect_ratios) * len(sizes)``, ratio-major order.

    Example:
        >>> generate_base_anchors((32,), (0.5, 1.0, 2.0))
        tensor([[-23., -11.,  23.,  11.],
                [-16., -16.,  16.,  16.],
                [-11., -23.,  11.,  23.]])
    """
    sizes_t = torch.tensor(_check_positive_values(sizes, "sizes"), dtype=torch.float64)
    ratios_t = torch.tensor(_check_positive_values(aspect_ratios, "aspect_ratios"), dtype=torch.float64)
    # Computed in float32 (as torchvision does) so that rounding ties resolve identically; float64 on request.
    work = torch.float64 if dtype == torch.float64 else torch.float32
    sizes_t, ratios_t = sizes_t.to(work), ratios_t.to(work)
    height_factor = torch.sqrt(ratios_t)
    width_factor = 1 / height_factor
    widths = (width_factor[:, None] * sizes_t[None, :]).reshape(-1)
    heights = (height_factor[:, None] * sizes_t[None, :]).reshape(-1)
    anchors = torch.stack([-widths, -heights, widths, heights], dim=1) / 2
    if round_base_anchors:
        anchors = anchors.round()
    return anchors.to(dtype=dtype, device=device)


def grid_anchors(
    base_anchors: Tensor,
    feature_size: Sequence[int] | torch.Size,
    stride: Sequence[int | float],
    *,
    offset: float = 0.0,
) -> Tensor:
    """Shift ``base_anchors`` over every cell of one feature map.

    Args:
        base_anchors: ``Tensor[A, 4]`` zero-centred xyxy anchors (from :func:`generate_base_anchors`).
        feature_size: ``(height, width)`` of the feature map, in cells.
        stride: ``(stride_h, stride_w)`` in pixels per cell.
        offset: cell-relative position of the anchor centre (0 = top-left pixel, 0.5 = cell centre).

    Returns:
        ``Tensor[H * W * A, 4]`` xyxy, location-major (row-major over cells), then anchor.

    Example:
        >>> base = torch.tensor([[-8.0, -8.0, 8.0, 8.0]])
        >>> grid_anchors(base, (1, 2), (16, 16))
        tensor([[-8., -8.,  8.,  8.],
                [ 8., -8., 24.,  8.]])
    """
    if not isinstance(base_anchors, Tensor) or base_anchors.dim() != 2 or base_anchors.shape[1] != 4:
        shape = list(base_anchors.shape) if isinstance(base_anchors, Tensor) else type(base_anchors).__name__
        raise ValueError(f"base_anchors must be a Tensor[A, 4], got {shape}")
    height, width = _check_pair(feature_size, "feature_size", 0)
    if len(stride) != 2 or any(not math.isfinite(float(s)) or float(s) <= 0 for s in stride):
        raise ValueError(
            f"stride must be a pair of positive numbers (stride_h, stride_w), got {tuple(stride)!r}"
        )
    dtype, device = base_anchors.dtype, base_anchors.device
    shifts_x = (torch.arange(width, dtype=dtype, device=device) + offset) * float(stride[1])
    shifts_y = (torch.arange(height, dtype=dtype, device=device) + offset) * float(stride[0])
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=-1).reshape(-1, 1, 4)
    return (shifts + base_anchors[None]).reshape(-1, 4)


def _level_strides(
    feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int]
) -> list[tuple[int, int]]:
    strides = []
    for level, (height, width) in enumerate(feature_sizes):
        if height > image_size[0] or width > image_size[1]:
            raise ValueError(
                f"feature_sizes[{level}] = {(height, width)} is larger than image_size {image_size}; "
                "a feature map cannot have more cells than the image has pixels"
            )
        strides.append((image_size[0] // height if height else 1, image_size[1] // width if width else 1))
    return strides


def generate_anchors(
    feature_sizes: Sequence[Sequence[int] | torch.Size],
    image_size: Sequence[int] | torch.Size,
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[Sequence[float]],
    *,
    round_base_anchors: bool = True,
    offset: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    strides: Sequence[int] | None = None,
) -> Tensor:
    """Anchors for all levels of one image, concatenated level by level.

    Args:
        feature_sizes: ``(height, width)`` of each level's feature map.
        image_size: ``(height, width)`` of the (padded) input image; strides are ``image // feature``.
        sizes: anchor sizes per level, e.g. ``((32,), (64,), (128,))`` or ``((128, 256, 512),)``.
        aspect_ratios: ``height / width`` ratios per level.
        round_base_anchors: see :func:`generate_base_anchors`.
        offset: see :func:`grid_anchors`.
        dtype: floating dtype of the result.
        device: device of the result.
        strides: each level's stride (from the neck's ``ShapeSpec``); ``None``: ``image // feature`` per
            side (torchvision's behaviour).

    Returns:
        ``Tensor[sum_l H_l * W_l * A_l, 4]`` xyxy.

    Example:
        >>> generate_anchors([(2, 2)], (64, 64), ((32,),), ((1.0,),))
        tensor([[-16., -16.,  16.,  16.],
                [ 16., -16.,  48.,  16.],
                [-16.,  16.,  16.,  48.],
                [ 16.,  16.,  48.,  48.]])
    """
    if len(sizes) != len(aspect_ratios) or len(feature_sizes) != len(sizes):
        raise ValueError(
            f"need one entry per level: got {len(feature_sizes)} feature_sizes, {len(sizes)} sizes and "
            f"{len(aspect_ratios)} aspect_ratios"
        )
    image_hw = _check_pair(image_size, "image_size", 1)
    level_sizes = [_check_pair(size, f"feature_sizes[{i}]", 0) for i, size in enumerate(feature_sizes)]
    if strides is None:
        level_strides = _level_strides(level_sizes, image_hw)
    else:
        if len(strides) != len(level_sizes) or any(int(s) < 1 for s in strides):
            raise ValueError(f"strides must give one positive stride per level, got {list(strides)}")
        level_strides = [(int(s), int(s)) for s in strides]
    levels = []
    per_level = zip(level_sizes, level_strides, sizes, aspect_ratios, strict=True)
    for level_size, stride, level_sizes_px, level_ratios in per_level:
        base = generate_base_anchors(
            level_sizes_px, level_ratios, round_base_anchors=round_base_anchors, dtype=dtype, device=device
        )
        levels.append(grid_anchors(base, level_size, stride, offset=offset))
    return torch.cat(levels)


class AnchorGenerator(nn.Module):
    """Anchors for a batch of images and a list of feature maps (Faster R-CNN RPN, handbook §10).

    ``sizes[l]`` and ``aspect_ratios[l]`` give level ``l`` its ``len(sizes[l]) * len(aspect_ratios[l])``
    anchors per location. The default is the handbook's and the paper's single level with ``k = 9``:
    sizes 128, 256, 512 × ratios 1:2, 1:1, 2:1. Conventions are in this module's docstring; they match
    ``torchvision.models.detection.anchor_utils.AnchorGenerator`` exactly.

    Args:
        sizes: anchor sizes per level (pixels).
        aspect_ratios: ``height / width`` ratios per level.
        round_base_anchors: round zero-centred anchors to integers (torchvision behaviour).
        offset: anchor centre inside a cell, 0 (torchvision) or 0.5 (cell centre).

    Example:
        >>> generator = AnchorGenerator(sizes=((32, 64, 128),), aspect_ratios=((0.5, 1.0, 2.0),))
        >>> generator.num_anchors_per_location()
        [9]
        >>> anchors = generator(torch.zeros(2, 3, 64, 64), [torch.zeros(2, 8, 4, 4)])
        >>> len(anchors), anchors[0].shape
        (2, torch.Size([144, 4]))
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]] = ((128, 256, 512),),
        aspect_ratios: Sequence[Sequence[float]] = ((0.5, 1.0, 2.0),),
        *,
        round_base_anchors: bool = True,
        offset: float = 0.0,
        strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if strides is not None and len(strides) != len(sizes):
            raise ValueError(f"strides needs one entry per level ({len(sizes)}), got {list(strides)}")
        self.strides = tuple(int(s) for s in strides) if strides is not None else None
        if len(sizes) == 0 or len(sizes) != len(aspect_ratios):
            raise ValueError(
                f"sizes and aspect_ratios need one entry per level and the same length, got "
                f"{len(sizes)} and {len(aspect_ratios)}"
            )
        self.sizes = tuple(_check_positive_values(s, f"sizes[{i}]") for i, s in enumerate(sizes))
        self.aspect_ratios = tuple(
            _check_positive_values(r, f"aspect_ratios[{i}]") for i, r in enumerate(aspect_ratios)
        )
        self.round_base_anchors = round_base_anchors
        self.offset = float(offset)

    def num_anchors_per_location(self) -> list[int]:
        """Anchors per feature-map location, one entry per level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios, strict=True)]

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, offset={self.offset}"

    def forward(self, images: Tensor, feature_maps: Sequence[Tensor]) -> list[Tensor]:
        """Anchors for each image of the batch.

        Args:
            images: the padded batch ``Tensor[B, C, H, W]`` (only its shape is used).
            feature_maps: one ``Tensor[B, C_l, H_l, W_l]`` per level.

        Returns:
            ``B`` tensors ``Tensor[sum_l H_l * W_l * A_l, 4]`` xyxy, float32 (float64 when the feature maps
            are float64; half-precision maps still get float32 because fp16 cannot hold pixel coordinates).
        """
        if not isinstance(images, Tensor) or images.dim() < 2:
            raise ValueError("images must be a batched Tensor[B, C, H, W]")
        if len(feature_maps) != len(self.sizes):
            raise ValueError(
                f"feature_maps has {len(feature_maps)} levels but the generator was built for "
                f"{len(self.sizes)}"
            )
        dtype = torch.float64 if feature_maps[0].dtype == torch.float64 else torch.float32
        anchors = generate_anchors(
            [tuple(f.shape[-2:]) for f in feature_maps],
            tuple(images.shape[-2:]),
            self.sizes,
            self.aspect_ratios,
            round_base_anchors=self.round_base_anchors,
            offset=self.offset,
            dtype=dtype,
            device=feature_maps[0].device,
            strides=self.strides,
        )
        batch_size = images.shape[0] if images.dim() == 4 else 1
        return [anchors.clone() for _ in range(batch_size)]


def fpn_anchor_generator(
    sizes: Sequence[float] = (32, 64, 128, 256, 512),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    *,
    scales_per_octave: int = 1,
    round_base_anchors: bool = True,
    strides: Sequence[int] | None = None,
) -> AnchorGenerator:
    """An :class:`AnchorGenerator` for an FPN: one base size per level (P2..P6), the same ratios everywhere.

    ``scales_per_octave > 1`` adds sizes ``size * 2 ** (i / scales_per_octave)`` per level, as RetinaNet
    (Lin et al., 2017) does with 3 scales per octave.

    Example:
        >>> fpn_anchor_generator().num_anchors_per_location()
        [3, 3, 3, 3, 3]
        >>> fpn_anchor_generator((32, 64), scales_per_octave=3).sizes[0]
        (32.0, 40.31747359663594, 50.79683366298238)
    """
    if isinstance(scales_per_octave, bool) or not isinstance(scales_per_octave, int) or scales_per_octave < 1:
        raise ValueError(f"scales_per_octave must be an integer >= 1, got {scales_per_octave!r}")
    base_sizes = _check_positive_values(sizes, "sizes")
    level_sizes = tuple(
        tuple(size * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)) for size in base_sizes
    )
    return AnchorGenerator(
        level_sizes, (tuple(aspect_ratios),) * len(level_sizes), round_base_anchors=round_base_anchors,
        strides=strides,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# k-means anchor priors (YOLOv2 "dimension clusters", kept by YOLOv3: 9 clusters, 3 per scale; §18)
# ---------------------------------------------------------------------------------------------------------


def _check_wh(wh: Tensor, name: str = "wh") -> Tensor:
    if not isinstance(wh, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N, 2], got {type(wh).__name__}")
    if wh.dim() != 2 or wh.shape[1] != 2:
        raise ValueError(f"{name} must have shape [N, 2] (width, height), got {list(wh.shape)}")
    if wh.is_complex() or wh.dtype == torch.bool:
        raise ValueError(f"{name} must be a real tensor, got {wh.dtype}")
    wh = wh if wh.dtype == torch.float64 else wh.float()
    bad = ~(torch.isfinite(wh) & (wh > 0)).all(dim=1)
    if bad.any():
        index = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name}[{index}] must hold a positive finite width and height, got {wh[index].tolist()}"
        )
    return wh


def wh_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of boxes given only by ``(width, height)``, as if all were centred at the same point.

    ``IoU = min(w1, w2) * min(h1, h2) / (w1 * h1 + w2 * h2 - min(w1, w2) * min(h1, h2))``.

    Args:
        wh1: ``Tensor[N, 2]`` positive widths and heights.
        wh2: ``Tensor[K, 2]`` positive widths and heights.

    Returns:
        ``Tensor[N, K]`` in float32 (float64 when an input is float64).

    Example:
        >>> wh_iou(torch.tensor([[2.0, 2.0]]), torch.tensor([[2.0, 2.0], [1.0, 4.0]]))
        tensor([[1.0000, 0.3333]])
    """
    if isinstance(wh1, Tensor) and isinstance(wh2, Tensor) and wh1.device != wh2.device:
        raise ValueError(f"wh1 is on {wh1.device} but wh2 is on {wh2.device}; move both to one device")
    wh1, wh2 = _check_wh(wh1, "wh1"), _check_wh(wh2, "wh2")
    dtype = torch.promote_types(wh1.dtype, wh2.dtype)
    return _pairwise_wh_iou(wh1.to(dtype), wh2.to(dtype))


def _pairwise_wh_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """:func:`wh_iou` without the argument checks, for the k-means loop (inputs already validated)."""
    inter = torch.minimum(wh1[:, None, 0], wh2[None, :, 0]) * torch.minimum(wh1[:, None, 1], wh2[None, :, 1])
    return inter / ((wh1[:, 0] * wh1[:, 1])[:, None] + (wh2[:, 0] * wh2[:, 1])[None, :] - inter)


def kmeans_plus_plus_init(wh: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007) with the distance ``1 - IoU``.

    The first centre is a uniformly drawn point; each next one is drawn with probability proportional to
    the squared distance to its nearest chosen centre. All draws use ``generator`` (a CPU generator).

    Args:
        wh: ``Tensor[N, 2]`` positive widths and heights with at least ``k`` distinct rows.
        k: number of centres.
        generator: CPU ``torch.Generator``; the same seed gives the same centres.

    Returns:
        ``Tensor[k, 2]`` rows of ``wh`` (in draw order).

    Example:
        >>> wh = torch.tensor([[1.0, 1.0], [10.0, 10.0], [1.0, 1.0]])
        >>> kmeans_plus_plus_init(wh, 2, torch.Generator().manual_seed(0)).shape
        torch.Size([2, 2])
    """
    wh = _check_wh(wh)
    first = int(torch.randint(wh.shape[0], (1,), generator=generator))
    chosen = [first]
    distance = 1 - _pairwise_wh_iou(wh, wh[first : first + 1])[:, 0]
    for _ in range(1, k):
        weights = distance.clamp(min=0).square().cpu().double()
        if float(weights.sum()) <= 0:
            raise ValueError(f"cannot seed {k} distinct centres: wh has fewer distinct sizes than k")
        index = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(index)
        distance = torch.minimum(distance, 1 - _pairwise_wh_iou(wh, wh[index : index + 1])[:, 0])
    return wh[chosen].clone()


def kmeans_anchors(
    wh: Tensor,
    k: int = 9,
    *,
    iterations: int = 300,
    seed: int = 0,
    initial_centers: Tensor | None = None,
) -> Tensor:
    """Cluster box sizes into ``k`` anchor priors with the distance ``1 - IoU`` (YOLOv2 §2.2, YOLOv3).

    Lloyd's algorithm: assign every box to the centre of highest IoU (ties: lower centre index), move each
    centre to the mean width and height of its boxes, until the assignment stops changing or
    ``iterations`` rounds have run. A centre that loses all its boxes stays where it is. Seeded with
    :func:`kmeans_plus_plus_init` from ``torch.Generator().manual_seed(seed)``: deterministic from ``seed``.

    Args:
        wh: ``Tensor[N, 2]`` positive widths and heights of the training boxes (pixels).
        k: number of anchors (YOLOv2 used 5, YOLOv3 9 = 3 scales × 3).
        iterations: maximum number of Lloyd rounds.
        seed: seed of the k-means++ initialisation.
        initial_centers: optional ``Tensor[k, 2]`` start instead of k-means++.

    Returns:
        ``Tensor[k, 2]`` anchor ``(width, height)`` sorted by increasing area, float32 (float64 for float64
        input), on ``wh``'s device.

    Raises:
        ValueError: bad ``wh`` rows (index named), or ``k`` larger than the number of distinct sizes.

    Example:
        >>> wh = torch.tensor([[10.0, 10.0], [11.0, 9.0], [100.0, 50.0], [90.0, 60.0]])
        >>> kmeans_anchors(wh, k=2)
        tensor([[10.5000,  9.5000],
                [95.0000, 55.0000]])
    """
    wh = _check_wh(wh)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    num_distinct = torch.unique(wh, dim=0).shape[0]
    if k > num_distinct:
        raise ValueError(f"k={k} clusters need at least {k} distinct sizes, but wh has only {num_distinct}")
    if initial_centers is None:
        centers = kmeans_plus_plus_init(wh, k, torch.Generator().manual_seed(seed))
    else:
        centers = _check_wh(initial_centers, "initial_centers").to(device=wh.device, dtype=wh.dtype)
        if centers.shape[0] != k:
            raise ValueError(f"initial_centers must have shape [{k}, 2], got {list(centers.shape)}")
    assignment = None
    for _ in range(iterations):
        new_assignment = _pairwise_wh_iou(wh, centers).argmax(dim=1)
        if assignment is not None and torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        sums = torch.zeros_like(centers).index_add_(0, assignment, wh)
        counts = torch.bincount(assignment, minlength=k).to(wh.dtype)[:, None]
        centers = torch.where(counts > 0, sums / counts.clamp(min=1), centers)
    return centers[centers.prod(dim=1).argsort(stable=True)]


def anchor_fitness(wh: Tensor, anchors: Tensor) -> float:
    """Mean over boxes of the best IoU with any anchor ("Avg IOU" of YOLOv2 Table 1).

    Args:
        wh: ``Tensor[N, 2]`` box widths and heights, ``N >= 1``.
        anchors: ``Tensor[K, 2]`` anchor widths and heights, ``K >= 1``.

    Example:
        >>> anchor_fitness(torch.tensor([[2.0, 2.0], [1.0, 4.0]]), torch.tensor([[2.0, 2.0]]))
        0.6666666865348816
    """
    for name, tensor in (("wh", wh), ("anchors", anchors)):
        if isinstance(tensor, Tensor) and tensor.dim() == 2 and tensor.shape[0] == 0:
            raise ValueError(f"{name} must hold at least one (width, height) row, got shape [0, 2]")
    return float(wh_iou(wh, anchors).max(dim=1).values.mean())
