"""Where a lens finder looks: occlusion maps and Grad-CAM for batches of stamps.

Both functions take the module of a single-branch model (``(n, bands, H, W)`` ->
``(n,)`` logits, see :mod:`lensnet.models.registry`) and stamps that are **already
normalised** the way the model's config says (e.g. with
:func:`lensnet.preprocess.normalise`). They return one map per stamp, of the stamp's
size, as a float32 numpy array of shape ``(n, H, W)``.

* :func:`occlusion_map` (Zeiler & Fergus 2014): slide a square patch set to ``baseline``
  over every band at once and record how much the logit *drops*; each pixel gets the
  mean drop over the patch positions that covered it. Positive = the pixels support the
  lens call, negative = they argue against it. Model-agnostic but costs one forward
  pass per patch position.
* :func:`grad_cam` (Selvaraju et al. 2017): weight the channels of a convolutional
  layer's activation by the spatial mean of the logit's gradient, sum, keep the positive
  part and upsample bilinearly to the stamp. One forward and one backward pass.

The module's train/eval mode is restored on return and no parameter gradients are
accumulated, so from the caller's side both functions are pure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["default_cam_layer", "grad_cam", "occlusion_deltas", "occlusion_map", "patch_starts"]


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block and restore its previous mode."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _as_batch(stamps: npt.ArrayLike | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A float32 ``(n, bands, H, W)`` tensor on ``device`` (a single stamp gains an axis)."""
    tensor = stamps if isinstance(stamps, torch.Tensor) else torch.from_numpy(np.asarray(stamps, dtype=np.float32))
    tensor = tensor.detach().to(device=device, dtype=torch.float32)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4:
        raise ValueError(f"stamps must have shape (n, bands, H, W) or (bands, H, W); got {tuple(tensor.shape)}")
    return tensor


def _device_of(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def patch_starts(size_px: int, patch_px: int, stride_px: int) -> list[int]:
    """First pixel of each patch along one axis: every ``stride_px``, plus one flush with
    the far edge when the stride does not land there, so every pixel is covered."""
    if not 1 <= patch_px <= size_px:
        raise ValueError(f"patch_px must be in [1, {size_px}]; got {patch_px}")
    if stride_px < 1:
        raise ValueError(f"stride_px must be >= 1; got {stride_px}")
    starts = list(range(0, size_px - patch_px + 1, stride_px))
    if starts[-1] != size_px - patch_px:
        starts.append(size_px - patch_px)
    return starts


def occlusion_deltas(
    module: nn.Module,
    stamps_normalised: npt.ArrayLike | torch.Tensor,
    patch_px: int = 8,
    stride_px: int = 4,
    baseline: float = 0.0,
    batch_size: int = 256,
) -> tuple[np.ndarray, list[int], list[int]]:
    """Logit drop for every patch position: ``logit(stamp) - logit(occluded stamp)``.

    Returns:
        ``(deltas, row_starts, col_starts)``: ``deltas`` has shape
        ``(n, len(row_starts), len(col_starts))``; entry ``[k, i, j]`` is the drop when the
        patch ``[row_starts[i]:+patch_px, col_starts[j]:+patch_px]`` of stamp ``k`` is set
        to ``baseline`` in every band.
    """
    device = _device_of(module)
    x = _as_batch(stamps_normalised, device)
    n, _, height, width = x.shape
    rows, cols = patch_starts(height, patch_px, stride_px), patch_starts(width, patch_px, stride_px)
    masks = torch.zeros(len(rows) * len(cols), 1, height, width, dtype=torch.bool, device=device)
    for index, (top, left) in enumerate((r, c) for r in rows for c in cols):
        masks[index, 0, top : top + patch_px, left : left + patch_px] = True
    deltas = torch.empty(n, len(masks), dtype=torch.float32)
    fill = torch.tensor(baseline, dtype=x.dtype, device=device)
    with _eval_mode(module), torch.inference_mode():
        for start in range(0, n, batch_size):
            stamps = x[start : start + batch_size]
            reference = module(stamps).float().reshape(-1)
            # Each forward pass holds about batch_size images: positions x stamps.
            per_pass = max(1, batch_size // len(stamps))
            for first in range(0, len(masks), per_pass):
                mask = masks[first : first + per_pass]  # (p, 1, H, W)
                occluded = torch.where(mask.unsqueeze(0), fill, stamps.unsqueeze(1))  # (b, p, bands, H, W)
                logits = module(occluded.reshape(-1, *stamps.shape[1:])).float().reshape(len(stamps), len(mask))
                deltas[start : start + len(stamps), first : first + len(mask)] = (reference[:, None] - logits).cpu()
    return deltas.reshape(n, len(rows), len(cols)).numpy(), rows, cols


def occlusion_map(
    module: nn.Module,
    stamps_normalised: npt.ArrayLike | torch.Tensor,
    patch_px: int = 8,
    stride_px: int = 4,
    baseline: float = 0.0,
    batch_size: int = 256,
) -> np.ndarray:
    """Per-pixel occlusion sensitivity: the mean logit drop over the patches covering a pixel.

    Args:
        module: single-branch model returning ``(n,)`` logits.
        stamps_normalised: ``(n, bands, H, W)`` (or one ``(bands, H, W)``) model inputs.
        patch_px: side of the square occluding patch.
        stride_px: step between patch positions (a last position flush with the edge is
            added, so every pixel is covered at least once).
        baseline: value the occluded pixels take in every band (0 is the background
            level of the zero-centred normalisations).
        batch_size: images per forward pass.

    Returns:
        float32 ``(n, H, W)``; positive where hiding the pixels lowers the logit.
    """
    deltas, rows, cols = occlusion_deltas(module, stamps_normalised, patch_px, stride_px, baseline, batch_size)
    n = deltas.shape[0]
    height = rows[-1] + patch_px
    width = cols[-1] + patch_px
    total = np.zeros((n, height, width), dtype=np.float64)
    coverage = np.zeros((height, width), dtype=np.float64)
    for i, top in enumerate(rows):
        for j, left in enumerate(cols):
            total[:, top : top + patch_px, left : left + patch_px] += deltas[:, i, j, None, None]
            coverage[top : top + patch_px, left : left + patch_px] += 1.0
    return (total / np.maximum(coverage, 1.0)).astype(np.float32)


def default_cam_layer(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """The convolution that runs **last** in a forward pass of ``example``.

    Execution order, not registration order: in a residual block the 1x1 shortcut
    projection is often registered after the block's last 3x3 convolution but runs
    before it, and Grad-CAM wants the deepest feature map.
    """
    executed: list[nn.Module] = []
    handles = [
        layer.register_forward_hook(lambda layer, _inputs, _output: executed.append(layer))
        for layer in module.modules()
        if isinstance(layer, nn.Conv2d)
    ]
    try:
        with _eval_mode(module), torch.inference_mode():
            module(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    if not executed:
        raise ValueError("the module runs no nn.Conv2d layer; pass the layer for Grad-CAM explicitly")
    return executed[-1]


def grad_cam(
    module: nn.Module,
    stamps_normalised: npt.ArrayLike | torch.Tensor,
    layer: nn.Module | None = None,
    batch_size: int = 128,
) -> np.ndarray:
    """Grad-CAM of the lens logit, upsampled to the stamp size.

    Args:
        module: single-branch model returning ``(n,)`` logits.
        stamps_normalised: ``(n, bands, H, W)`` (or one ``(bands, H, W)``) model inputs.
        layer: the layer whose output feature map is explained; default
            :func:`default_cam_layer` (the last convolution executed).
        batch_size: stamps per forward/backward pass.

    Returns:
        float32 ``(n, H, W)``, finite and non-negative (zero where no channel argues
        for a lens). Maps are not normalised: compare them within a stamp.
    """
    device = _device_of(module)
    x = _as_batch(stamps_normalised, device)
    height, width = x.shape[-2:]
    target = layer if layer is not None else default_cam_layer(module, x)
    captured: list[torch.Tensor] = []

    def keep_activation(_layer: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        captured.append(output)
        # Hand a copy downstream so that an in-place activation cannot overwrite the
        # tensor whose gradient is taken.
        return output.clone()

    maps = []
    handle = target.register_forward_hook(keep_activation)
    try:
        with _eval_mode(module), torch.inference_mode(False), torch.enable_grad():
            for start in range(0, len(x), batch_size):
                captured.clear()
                batch = x[start : start + batch_size].clone()
                logits = module(batch).float().reshape(-1)
                if len(captured) != 1:
                    raise ValueError(f"the Grad-CAM layer ran {len(captured)} times in one forward pass; need once")
                activation = captured[0]
                (gradient,) = torch.autograd.grad(logits.sum(), activation)
                weights = gradient.mean(dim=(-2, -1), keepdim=True)
                cam = torch.relu((weights * activation).sum(dim=1, keepdim=True)).detach()
                cam = F.interpolate(cam.float(), size=(height, width), mode="bilinear", align_corners=False)
                maps.append(torch.nan_to_num(cam[:, 0].clamp_min(0.0), nan=0.0, posinf=0.0).cpu())
    finally:
        handle.remove()
    return torch.cat(maps).numpy().astype(np.float32)
