"""Sheets people can read: rows of images upscaled (nearest) to at least 96 px, with captions.

One sheet per attack: a title line (the attack, the training step, the verdict), then one row per
kind of image (ground truth, the reconstruction, the control's reconstruction), each image with a
caption of its scores and findings, and under each reconstruction row its contrast-stretched copy
(a faint reconstruction that looks blank may still show its digit). The same sheet goes to the PNG
in the run folder and to W&B.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

__all__ = ["CHAR_W", "LINE", "MIN_SIDE", "PAD", "SheetRow", "contrast_stretched", "draw_sheet", "with_stretched"]

MIN_SIDE = 96
PAD, LINE, CHAR_W = 6, 12, 7  # pixels between images; a text line's height and a character's width (PIL's default font)


@dataclass(frozen=True)
class SheetRow:
    """One row of a sheet.

    Args:
        name: what the row shows (``ground truth``, ``reconstruction``, ``control``), drawn at its left.
        images: ``(N, C, H, W)`` in ``[0, 1]``.
        captions: one caption per image (may hold several lines), e.g. its scores.
    """

    name: str
    images: Tensor
    captions: Sequence[str] = ()


def draw_sheet(title: str, rows: Sequence[SheetRow], min_side: int = MIN_SIDE) -> Tensor:
    """Draw the rows under the title.

    Args:
        title: the sheet's first line(s).
        rows: the rows, top to bottom (the same number of images each).
        min_side: every image is enlarged by an integer factor (nearest) to at least this many pixels.

    Returns:
        ``(3, H, W)`` in ``[0, 1]``.
    """
    side = max(rows[0].images.shape[-2:])
    scale = max(1, math.ceil(min_side / side))
    tile_h, tile_w = (size * scale for size in rows[0].images.shape[-2:])
    label_w = CHAR_W * max(len(row.name) for row in rows) + 2 * PAD
    caption_lines = max((c.count("\n") + 1 for row in rows for c in row.captions), default=0)
    row_h = tile_h + caption_lines * LINE + PAD
    title_h = (title.count("\n") + 1) * LINE + PAD
    count = max(len(row.images) for row in rows)
    title_w = CHAR_W * max(len(line) for line in title.splitlines()) + 2 * PAD
    sheet = Image.new("RGB", (max(label_w + count * (tile_w + PAD), title_w), title_h + len(rows) * row_h), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    draw.multiline_text((PAD, 2), title, fill="black", font=font, spacing=0)
    for r, row in enumerate(rows):
        top = title_h + r * row_h
        draw.text((2, top + tile_h // 2), row.name, fill="black", font=font)
        tiles = F.interpolate(row.images.detach().float().cpu().clamp(0, 1), scale_factor=scale, mode="nearest")
        for i, tile in enumerate(tiles):
            left = label_w + i * (tile_w + PAD)
            sheet.paste(to_pil_image(tile.expand(3, -1, -1) if len(tile) == 1 else tile), (left, top))
            if i < len(row.captions):
                draw.multiline_text((left, top + tile_h + 1), row.captions[i], fill="black", font=font, spacing=0)
    return pil_to_tensor(sheet).float() / 255


def contrast_stretched(images: Tensor) -> Tensor:
    """Each image's values mapped linearly onto ``[0, 1]`` (a flat image stays flat, at 0).

    Args:
        images: ``(N, C, H, W)``.
    """
    flat = images.detach().flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(images)


def with_stretched(row: SheetRow) -> list[SheetRow]:
    """The row and, under it, its images contrast-stretched (:func:`contrast_stretched`), uncaptioned."""
    return [row, SheetRow(f"{row.name} (stretched)", contrast_stretched(row.images))]
