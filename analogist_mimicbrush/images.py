"""The official demo's image handling, on uint8 numpy arrays (HWC RGB, HW masks).

Pre-processing: pad to square (images white, masks black; the original at offset
``(long - short) // 2``), mask thresholded ``> 128``, masked pixels of the target painted
black ("collage"), PIL LANCZOS to 512, mask re-binarised at 0.5 after its LANCZOS resize and
taken every 8th pixel for the latent; CLIP input PIL bicubic to 224 with the OpenAI
mean/std; depth input the padded target, bicubic to 518, normalised with the ImageNet
mean/std on 0..255 values and only then divided by 255 (the official quirk).

Post-processing: the 512 image resized back to the padded size (bilinear), the padding
cropped, and a composite over the original target through the mask blurred ten times with
a 3 x 3 Gaussian (integer arithmetic, reflect-101 border, half rounded up per pass),
truncated to uint8 as the demo does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PIPELINE_SIZE = 512
LATENT_STRIDE = 8
MASK_THRESHOLD = 128  # the demo's ``sketch > 128``
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ALPHA_BLUR_PASSES = 10


@dataclass(frozen=True)
class Padding:
    """Where an image of ``height x width`` sits inside its padded square of ``side``."""

    height: int
    width: int
    side: int
    top: int
    left: int

    def crop(self, square: np.ndarray) -> np.ndarray:
        return square[self.top : self.top + self.height, self.left : self.left + self.width]


def padding_for(height: int, width: int) -> Padding:
    side = max(height, width)
    return Padding(height, width, side, (side - height) // 2, (side - width) // 2)


def pad_to_square(image: np.ndarray, fill: int) -> tuple[np.ndarray, Padding]:
    pad = padding_for(image.shape[0], image.shape[1])
    out = np.full((pad.side, pad.side) + image.shape[2:], fill, dtype=np.uint8)
    out[pad.top : pad.top + pad.height, pad.left : pad.left + pad.width] = image
    return out, pad


@dataclass(frozen=True)
class CropBox:
    """A rectangle of a target: ``[top : top + height, left : left + width]``."""

    top: int
    left: int
    height: int
    width: int

    def cut(self, image: np.ndarray) -> np.ndarray:
        return image[self.top : self.top + self.height, self.left : self.left + self.width]


def crop_box(masked: np.ndarray, margin: float, minimum: int = PIPELINE_SIZE) -> CropBox:
    """The region worked on for a large target: the mask's bounding box grown by ``margin``
    of its size on each side, then to at least ``minimum`` px each way (centred), kept inside
    the image. A target no larger than ``minimum`` is kept whole."""
    h, w = masked.shape
    rows, cols = np.nonzero(masked)
    if rows.size == 0:
        return CropBox(0, 0, h, w)

    def span(lo: int, hi: int, size: int) -> tuple[int, int]:
        extent = hi - lo + 1
        grow = int(round(extent * margin))
        lo, hi = lo - grow, hi + grow + 1
        if hi - lo < minimum:
            extra = minimum - (hi - lo)
            lo -= extra // 2
            hi += extra - extra // 2
        if hi - lo >= size:
            return 0, size
        if lo < 0:
            lo, hi = 0, hi - lo
        if hi > size:
            lo, hi = lo - (hi - size), size
        return lo, hi

    top, bottom = span(int(rows.min()), int(rows.max()), h)
    left, right = span(int(cols.min()), int(cols.max()), w)
    return CropBox(top, left, bottom - top, right - left)


def binarize_mask(mask_u8: np.ndarray) -> np.ndarray:
    """0/255 uint8 from the demo's ``> 128``."""
    return np.where(mask_u8 > MASK_THRESHOLD, 255, 0).astype(np.uint8)


def collage(target_padded: np.ndarray, mask_padded: np.ndarray) -> np.ndarray:
    out = target_padded.copy()
    out[mask_padded > 0] = 0
    return out


def lanczos(image: np.ndarray, size: int = PIPELINE_SIZE) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def to_unit_range(image_u8: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> float32 ``[1, 3, H, W]`` in -1..1 (``/255 * 2 - 1``)."""
    x = torch.from_numpy(image_u8.astype(np.float32) / 255.0 * 2.0 - 1.0)
    return x.permute(2, 0, 1).unsqueeze(0).contiguous()


def mask_512(mask_padded: np.ndarray, size: int = PIPELINE_SIZE) -> np.ndarray:
    """The LANCZOS-resized mask re-binarised at 0.5: 0/1 uint8."""
    resized = lanczos(mask_padded, size).astype(np.float32) / 255.0
    return (resized >= 0.5).astype(np.uint8)


def mask_latent(mask01: np.ndarray) -> torch.Tensor:
    """Nearest downsample (every 8th pixel) to ``[1, 1, h/8, w/8]`` float32."""
    return torch.from_numpy(mask01[::LATENT_STRIDE, ::LATENT_STRIDE].astype(np.float32))[None, None]


def clip_input_u8(reference_padded: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(
        Image.fromarray(reference_padded).resize((size, size), Image.Resampling.BICUBIC)
    )


def clip_normalise(image_u8: np.ndarray) -> torch.Tensor:
    x: np.ndarray = (image_u8.astype(np.float64) * (1.0 / 255.0)).astype(np.float32)
    x = (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).contiguous()


def resize_u8(image: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Torch resampling of a uint8 image (``bicubic`` A = -0.75 or ``bilinear``, half-pixel
    centres, no antialias), rounded: within one level of OpenCV's INTER_CUBIC/INTER_LINEAR."""
    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)
    y = F.interpolate(x, size=size, mode=mode, align_corners=False)
    return y.round().clamp(0, 255).squeeze(0).permute(1, 2, 0).numpy().astype(np.uint8)


def depth_input_u8(target_padded: np.ndarray, size: int) -> np.ndarray:
    return resize_u8(target_padded, (size, size), "bicubic")


def depth_normalise(image_u8: np.ndarray, shape_control: bool) -> torch.Tensor:
    x = (image_u8.astype(np.float64) - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    x = x.astype(np.float32) / np.float32(255.0)
    t = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).contiguous()
    return t if shape_control else t * 0.0


def blur_alpha(mask_u8: np.ndarray, passes: int = ALPHA_BLUR_PASSES) -> np.ndarray:
    """``passes`` 3x3 Gaussian blurs (``[1,2,1]/4`` each way), reflect-101, half rounded up."""
    a = mask_u8.astype(np.int32)
    for _ in range(passes):
        p = np.pad(a, 1, mode="reflect")  # numpy's "reflect" is OpenCV's reflect-101
        h = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
        s = h[:-2] + 2 * h[1:-1] + h[2:]
        a = (s + 8) >> 4
    return a.astype(np.uint8)


def composite(synthesis: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``synth * a + target * (1 - a)`` in float64 with ``a = alpha / 255``, truncated."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    out = synthesis.astype(np.float64) * a + target.astype(np.float64) * (1.0 - a)
    return out.astype(np.uint8)


def image_to_u8(image: torch.Tensor) -> np.ndarray:
    """One ComfyUI IMAGE row ``[H, W, C]`` 0..1 -> uint8 RGB, rounded."""
    return (image[..., :3].float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def mask_to_u8(mask: torch.Tensor) -> np.ndarray:
    return (mask.float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def decoded_to_u8(image: torch.Tensor) -> np.ndarray:
    """A VAE-decoded row in 0..1 -> uint8 as the official ``(x * 255).round()``."""
    return (image[..., :3].float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
