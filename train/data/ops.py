"""The image operations of the GPU pipeline, batched with a parameter per image and free of host syncs and
data-dependent control flow (``torch.compile(fullgraph=True)`` traces them): each equals its
torchvision.transforms.v2 counterpart in ``cpu_augment.py`` (the tests compare them). ``gpu_augment.py`` draws
the parameters and applies them in order.
"""
import math
from typing import Sequence

import torch
import torch.nn.functional as F


def random_boxes(u_area: torch.Tensor, u_ratio: torch.Tensor, u_top: torch.Tensor, u_left: torch.Tensor,
                 H: torch.Tensor, W: torch.Tensor, scale: Sequence[float],
                 ratio: Sequence[float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Boxes [B, 4] (top, left, h, w) as RandomResizedCrop (and MULAN's RandomCutout, the same rule) draws
    them in images of heights H and widths W [B]: area fraction uniform in ``scale``, log-uniform aspect in
    ``ratio``, w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)); the first of the attempts with
    0 < w <= W and 0 < h <= H, at a uniform integer position; else the central box with the aspect clamped."""
    H, W = H[:, None], W[:, None]
    area = H * W * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u_ratio
    w = torch.round(torch.sqrt(area * torch.exp(log_r)))
    h = torch.round(torch.sqrt(area / torch.exp(log_r)))
    fits = (w > 0) & (h > 0) & (w <= W) & (h <= H)
    first = fits.float().argmax(1, keepdim=True)
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    H, W, found = H[:, 0], W[:, 0], fits.any(1)
    aspect = W / H
    fallback_w = torch.where(aspect > ratio[1], torch.round(H * ratio[1]), W)
    fallback_h = torch.where(aspect < ratio[0], torch.round(W / ratio[0]), H)
    h, w = torch.where(found, h, fallback_h), torch.where(found, w, fallback_w)
    top = torch.where(found, torch.floor(u_top * (H - h + 1)), torch.floor((H - h) / 2))
    left = torch.where(found, torch.floor(u_left * (W - w + 1)), torch.floor((W - w) / 2))
    return torch.stack([top, left, h, w], 1)


def _kernel(x: torch.Tensor, mode: str) -> torch.Tensor:
    """The antialiased resampling filters of ``F.interpolate(..., antialias=True)`` (PIL's): triangle, or
    Keys' cubic with a = -0.5."""
    x = x.abs()
    if mode == "bilinear":
        return (1 - x).clamp(min=0)
    a = -0.5
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resample_weights(start: torch.Tensor, length: torch.Tensor, extent: int, size: int, mode: str) -> torch.Tensor:
    """[B, size, extent]: row s holds the weights of the input pixels 0..extent-1 for output pixel s when the
    segment [start, start + length) of each image is resized to ``size`` pixels, exactly as
    ``F.interpolate(segment, size, mode, antialias=True, align_corners=False)`` weighs them (upsampling and
    downsampling alike; the filter widens by the scale when downsampling)."""
    scale = (length / size)[:, None, None]  # [B, 1, 1]
    support = (1.0 if mode == "bilinear" else 2.0) * scale.clamp(min=1)
    inverse = torch.where(scale >= 1, 1 / scale, torch.ones_like(scale))
    centre = scale * (torch.arange(size, device=start.device, dtype=torch.float32)[None, :, None] + 0.5)
    lo = torch.floor(centre - support + 0.5).clamp(min=0)
    hi = torch.minimum(torch.floor(centre + support + 0.5), length[:, None, None])
    j = torch.arange(extent, device=start.device, dtype=torch.float32)[None, None, :] - start[:, None, None]
    weights = torch.where((j >= lo) & (j < hi), _kernel((j - centre + 0.5) * inverse, mode), 0.0)
    total = weights.sum(2, keepdim=True)
    return weights / torch.where(total != 0, total, torch.ones_like(total))


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int,
                mode: str = "bicubic") -> torch.Tensor:
    """Every image (uint8 or float [B, 3, H, W], 0..255) cropped to its box [B, 4] (top, left, h, w), resized
    to size x size as ``F.interpolate(crop, mode=mode, antialias=True)`` would, flipped where asked, clamped to
    [0, 1] (as the uint8 resize of the reference saturates): two batched matrix products with the separable
    weights, whatever the boxes, so one graph serves every batch. Returns float [B, 3, size, size]."""
    _, _, H, W = images.shape
    rows = resample_weights(boxes[:, 0], boxes[:, 2], H, size, mode)  # [B, S, H]
    cols = resample_weights(boxes[:, 1], boxes[:, 3], W, size, mode)  # [B, S, W]
    cols = torch.where(flips[:, None, None], cols.flip(1), cols)
    x = torch.matmul(images.float(), cols.transpose(1, 2)[:, None])  # [B, 3, H, S]
    x = torch.matmul(rows[:, None], x)  # [B, 3, S, S]
    return (x / 255).clamp(0, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    delta = maxc - minc
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, (g - b) / d, torch.where(maxc == g, 2 + (b - r) / d, 4 + (r - g) / d))
    h = torch.where(delta > 0, (h / 6).remainder(1.0), torch.zeros_like(h))
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv.unbind(1)
    i = torch.floor(h * 6)
    f = h * 6 - i
    i = i.long().remainder(6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = torch.stack([
        torch.stack([v, q, p, p, t, v], 1), torch.stack([t, v, v, q, p, p], 1), torch.stack([p, p, t, v, v, q], 1),
    ], 1)  # [B, 3 (rgb), 6 (sector), H, W]
    return choices.gather(2, i[:, None, None].expand(-1, 3, 1, -1, -1)).squeeze(2).clamp(0, 1)


def color_jitter(x: torch.Tensor, u_apply: torch.Tensor, u_factors: torch.Tensor, u_order: torch.Tensor,
                 strengths: Sequence[float], p: float) -> torch.Tensor:
    """ColorJitter applied with probability p: per image, factors brightness, contrast, saturation in
    [max(0, 1 - s), 1 + s] and hue in [-s, s], in a uniformly random order per image.

    One pass per position of the order: each image's own operation there is selected, the three blends
    (brightness: with black, contrast: with the mean grey, saturation: with the grey image) as one blend with a
    per-image partner, the hue rotation in HSV where the image's operation is hue."""
    batch = x.shape[0]
    ranges = [(max(0.0, 1 - s), 1 + s) for s in strengths[:3]] + [(-strengths[3], strengths[3])]
    factors = torch.stack([lo + (hi - lo) * u_factors[:, k] for k, (lo, hi) in enumerate(ranges)], 1)  # [B, 4]
    order = u_order.argsort(1)  # a uniformly random permutation per image
    apply = (u_apply < p).view(batch, 1, 1, 1)
    for position in range(4):
        op = order[:, position]
        f = factors.gather(1, op[:, None]).view(batch, 1, 1, 1)
        op = op.view(batch, 1, 1, 1)
        grey = grayscale(x)
        partner = torch.where(op == 1, grey.mean((1, 2, 3), keepdim=True), grey) * (op != 0)
        blended = (f * x + (1 - f) * partner).clamp(0, 1)
        hsv = _rgb_to_hsv(x)
        hue = _hsv_to_rgb(torch.cat([(hsv[:, :1] + f).remainder(1.0), hsv[:, 1:]], 1))
        x = torch.where(apply, torch.where(op == 3, hue, blended), x)
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with a sigma per image (reflect padding, as torchvision); images not selected
    get a delta kernel, i.e. are copied exactly."""
    batch, channels, H, W = x.shape
    half = kernel_size // 2
    grid = torch.linspace(-half, half, kernel_size, device=x.device)
    kernel = torch.exp(-0.5 * (grid[None] / sigma[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)
    delta = (grid == 0).float()[None].expand_as(kernel)
    kernel = torch.where(apply[:, None], kernel, delta).repeat_interleave(channels, 0)  # [B*C, k]
    y = F.pad(x, [half] * 4, mode="reflect").reshape(1, batch * channels, H + 2 * half, W + 2 * half)
    y = F.conv2d(y, kernel[:, None, :, None], groups=batch * channels)
    y = F.conv2d(y, kernel[:, None, None, :], groups=batch * channels)
    return y.reshape(batch, channels, H, W)


def box_mask(boxes: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """[B, 1, H, W] true inside each box (top, left, h, w)."""
    rows = torch.arange(H, device=boxes.device)[None]
    cols = torch.arange(W, device=boxes.device)[None]
    top, left, h, w = boxes.unbind(1)
    inside_r = (rows >= top[:, None]) & (rows < (top + h)[:, None])
    inside_c = (cols >= left[:, None]) & (cols < (left + w)[:, None])
    return (inside_r[:, :, None] & inside_c[:, None, :])[:, None]
