"""Decoded images as a person sees them: the EXIF orientation applied, 16-bit grayscale scaled to 8 bits.

Every reader of user images goes through `as_displayed`: photos (`fer_hf.faces.load_image`: predict, explain, the
app, the runtime) and dataset faces (`fer_hf.transforms`). PIL alone ignores the orientation tag (a phone photo
stored sideways stays sideways) and clips 16-bit values when converting to 8 bits (a 16-bit face turns white).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

HIGH_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def as_displayed(image: Image.Image) -> Image.Image:
    """The image upright (EXIF orientation applied) and in an 8-bit mode."""
    return ImageOps.exif_transpose(to_8bit(image))


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit (and 32-bit integer) grayscale scaled to 8 bits (65535 -> 255), not clipped: PIL's own convert("L")
    clips such images to white. Other modes pass through."""
    if image.mode not in HIGH_BIT_GRAY:
        return image
    values = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16") or values.max(initial=0) > 255:  # 16-bit data (PNG 16-bit may open as "I")
        values = values / 257.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
