"""Batched data augmentation on tensors, drawn independently of the class label.

Wilde et al. (2022) show that augmenting only one class (e.g. rotating the lenses to
balance the classes) lets a network learn the PSF orientation instead of lensing, so
every transform here is applied to every stamp with the same distribution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_dihedral(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply one of the 8 symmetries of the square to each image (flips and 90-degree turns).

    Square images are transformed by selecting among whole-batch flips and turns, so that
    nothing waits for the device (no boolean indexing); other shapes subset by subset.
    """
    n, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    choice = torch.randint(0, 8, (n,), generator=generator, device="cpu").to(images.device)
    if height != width:
        return _dihedral_by_subset(images, choice)
    shape = (n,) + (1,) * (images.dim() - 1)
    flipped = torch.where((choice & 4).bool().view(shape), images.flip(-1), images)
    turns = (choice & 3).view(shape)
    out = flipped
    for k in (1, 2, 3):
        out = torch.where(turns == k, torch.rot90(flipped, k, dims=(-2, -1)), out)
    return out


def _dihedral_by_subset(images: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """:func:`random_dihedral` for non-square images (a quarter turn changes their shape)."""
    out = images.clone()
    flip = (choice & 4).bool()
    out[flip] = out[flip].flip(-1)
    for turns in (1, 2, 3):
        selected = (choice & 3) == turns
        if selected.any():
            out[selected] = torch.rot90(out[selected], turns, dims=(-2, -1))
    return out


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    max_rotation_deg: float = 180.0,
    zoom: tuple[float, float] = (0.8, 1.2),
    max_shift_px: float = 4.0,
) -> torch.Tensor:
    """Rotate, zoom and shift each image by its own random amount (bilinear, zero padding).

    A zoom factor above 1 magnifies the image (objects look larger).
    """
    n, _, height, width = images.shape
    uniform = lambda low, high: low + (high - low) * torch.rand(n, generator=generator)  # noqa: E731
    angle = torch.deg2rad(uniform(-max_rotation_deg, max_rotation_deg))
    scale = 1.0 / torch.exp(uniform(math.log(zoom[0]), math.log(zoom[1])))
    shift_x = uniform(-max_shift_px, max_shift_px) * 2 / width
    shift_y = uniform(-max_shift_px, max_shift_px) * 2 / height
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(images: torch.Tensor, generator: torch.Generator, **affine) -> torch.Tensor:
    """The training augmentation: a random dihedral symmetry, then a random small affine map."""
    return random_affine(random_dihedral(images, generator), generator, **affine)
