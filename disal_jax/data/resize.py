"""Load-time resizing of decoded images to one square size."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize(image: Image.Image, size: int, crop_from: int = 0) -> Image.Image:
  """`image` as size x size (bilinear).

  crop_from = 0: stretched to size x size. crop_from >= size: the shorter side resized to
  crop_from (aspect kept), then the central size x size cropped: the ImageNet evaluation
  recipe (256 -> 224) that the Caltech101 reference applies to every image.
  """
  if not crop_from:
    return image if image.size == (size, size) else image.resize((size, size), Image.BILINEAR)
  if crop_from < size:
    raise ValueError(f"crop_from={crop_from} is smaller than the crop size {size}")
  width, height = image.size
  scale = crop_from / min(width, height)
  new_w, new_h = (
    (crop_from, int(height * scale)) if width <= height else (int(width * scale), crop_from)
  )
  image = image.resize((new_w, new_h), Image.BILINEAR)
  left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
  return image.crop((left, top, left + size, top + size))


def resize_array(image: np.ndarray, size: int, crop_from: int = 0) -> np.ndarray:
  """(H, W) or (H, W, 1|3) uint8 -> (size, size, 3) uint8 RGB (see `resize`)."""
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  rgb = Image.fromarray(image).convert("RGB")
  return np.asarray(resize(rgb, size, crop_from), dtype=np.uint8)
