"""Pipeline (b): images decoded on the device, augmented in batches with per-image randomness.

Sources: a uint8 tensor of the whole set kept on the device (``data.in_memory``, small sets), or JPEG bytes read
by DataLoader workers and decoded on the GPU (``torchvision.io.decode_jpeg(..., device="cuda")``; other formats
and the CPU fall back to ``decode_image``). The operations and their parameter distributions are those of
torchvision.transforms.v2 in ``cpu_augment.py`` (the tests compare the two):

    RandomResizedCrop (10 attempts, centre-crop fallback) -> flip -> ColorJitter (brightness, contrast,
    saturation, hue in a random order per image) -> grayscale -> Gaussian blur -> solarize -> normalise -> cutout

Every random draw is made for the whole global batch from a generator seeded with (seed, step, view) and then
sliced to this process's images, so a step's augmentation is a pure function of (seed, step) whatever the
number of processes: exact resume, and DDP runs equal to one process on the same global batch.
"""
import math
from functools import lru_cache
from typing import Iterator, List, Sequence, Union

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from ..config import DataConfig
from .imagefolder import ImageFolder, decode_rgb, record_unreadable
from .sampler import StepPlan, StepSampler
from .views import ViewSpec, group_views

Images = Union[torch.Tensor, List[torch.Tensor]]  # uint8 [B, 3, H, W], or B tensors uint8 [3, Hi, Wi]


class Draw:
    """Uniform draws for the global batch, sliced to this process's images."""

    def __init__(self, generator: torch.Generator, n_global: int, local: slice):
        self.generator, self.n_global, self.local = generator, n_global, local

    def __call__(self, *shape: int) -> torch.Tensor:
        device = self.generator.device
        return torch.rand(self.n_global, *shape, generator=self.generator, device=device)[self.local]


def crop_boxes(draw: Draw, heights: torch.Tensor, widths: torch.Tensor, scale: Sequence[float],
               ratio: Sequence[float] = (3 / 4, 4 / 3), attempts: int = 10) -> torch.Tensor:
    """RandomResizedCrop's boxes [B, 4] (top, left, h, w): the first of 10 (area, aspect) draws that fits,
    else the centre crop with the aspect clamped to ``ratio``."""
    H, W = heights.float()[:, None], widths.float()[:, None]
    area = H * W * (scale[0] + (scale[1] - scale[0]) * draw(attempts))
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * draw(attempts)
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
    u_top, u_left = draw(), draw()
    top = torch.where(found, torch.floor(u_top * (H - h + 1)), torch.floor((H - h) / 2))
    left = torch.where(found, torch.floor(u_left * (W - w + 1)), torch.floor((W - w) / 2))
    return torch.stack([top, left, h, w], 1)


def crop_resize(images: Images, boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Crop every image to its box and resize it to size x size (bilinear, antialiased), flipping where asked.

    A batch whose crops all upsample is done in one ``grid_sample`` that samples exactly where
    ``F.interpolate`` would on each crop; otherwise image by image with ``F.interpolate(antialias=True)``.
    Returns float [B, 3, size, size] in [0, 1].
    """
    if isinstance(images, torch.Tensor) and bool((boxes[:, 2:] <= size).all()):
        x = images.float().div_(255)
        batch, _, H, W = x.shape
        top, left, h, w = (boxes[:, k, None] for k in range(4))
        steps = torch.arange(size, device=x.device, dtype=torch.float32)[None]
        ys = top + ((steps + 0.5) * h / size - 0.5).clamp(min=0).minimum(h - 1)  # [B, S], as interpolate maps
        xs = left + ((steps + 0.5) * w / size - 0.5).clamp(min=0).minimum(w - 1)
        xs = torch.where(flips[:, None], xs.flip(1), xs)
        grid = torch.stack(torch.broadcast_tensors((2 * xs / max(W - 1, 1) - 1)[:, None, :],
                                                   (2 * ys / max(H - 1, 1) - 1)[:, :, None]), -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    out = []
    for image, (t, l, h, w), flip in zip(images, boxes.long().tolist(), flips.tolist()):
        crop = image[None, :, t:t + h, l:l + w].float().div_(255)
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(crop.flip(-1) if flip else crop)
    return torch.cat(out).clamp_(0, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp(0, 1)


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


def color_jitter(x: torch.Tensor, draw: Draw, strengths: Sequence[float], p: float) -> torch.Tensor:
    """ColorJitter applied with probability p: per image, factors brightness, contrast, saturation in
    [max(0, 1 - s), 1 + s] and hue in [-s, s], in a random order per image."""
    batch = x.shape[0]
    apply = draw() < p
    factors = draw(4)
    order = draw(4).argsort(1)  # a uniformly random permutation per image
    for k, s in enumerate(strengths):
        lo = -s if k == 3 else max(0.0, 1 - s)
        factors[:, k] = lo + (s - lo if k == 3 else 1 + s - lo) * factors[:, k]
    f = factors.view(batch, 4, 1, 1, 1)
    for position in range(4):
        for op in range(4):
            selected = (apply & (order[:, position] == op)).view(batch, 1, 1, 1)
            if op == 0:
                y = _blend(x, torch.zeros_like(x), f[:, 0])
            elif op == 1:
                y = _blend(x, grayscale(x).mean((1, 2, 3), keepdim=True), f[:, 1])
            elif op == 2:
                y = _blend(x, grayscale(x), f[:, 2])
            else:
                hsv = _rgb_to_hsv(x)
                hsv = torch.cat([(hsv[:, :1] + f[:, 3]).remainder(1.0), hsv[:, 1:]], 1)
                y = _hsv_to_rgb(hsv)
            x = torch.where(selected, y, x)
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


def cutout(x: torch.Tensor, draw: Draw, area: Sequence[float], ratio: Sequence[float], attempts: int = 10):
    """RandomErasing(p=1): one block, ``area`` of the image, aspect in ``ratio``, set to 0 (the mean colour
    after normalisation); the first of 10 draws that fits strictly inside, none if no draw fits."""
    batch, _, H, W = x.shape
    target = H * W * (area[0] + (area[1] - area[0]) * draw(attempts))
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * draw(attempts))
    h, w = torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
    fits = (h < H) & (w < W)
    first = fits.float().argmax(1, keepdim=True)
    h, w, found = h.gather(1, first), w.gather(1, first), fits.any(1, keepdim=True)
    top, left = torch.floor(draw(1) * (H - h + 1)), torch.floor(draw(1) * (W - w + 1))
    rows = torch.arange(H, device=x.device)[None]
    cols = torch.arange(W, device=x.device)[None]
    inside_r = (rows >= top) & (rows < top + h) & found
    inside_c = (cols >= left) & (cols < left + w)
    mask = inside_r[:, :, None] & inside_c[:, None, :]  # [B, H, W]
    return x.masked_fill(mask[:, None], 0.0)


def augment_view(images: Images, spec: ViewSpec, data: DataConfig, draw: Draw) -> torch.Tensor:
    aug = data.augment
    if isinstance(images, torch.Tensor):
        heights = torch.full((images.shape[0],), images.shape[2], device=images.device)
        widths = torch.full((images.shape[0],), images.shape[3], device=images.device)
    else:
        device = images[0].device
        heights = torch.tensor([im.shape[1] for im in images], device=device)
        widths = torch.tensor([im.shape[2] for im in images], device=device)
    boxes = crop_boxes(draw, heights, widths, spec.scale)
    x = crop_resize(images, boxes, draw() < aug.flip_p, spec.size)
    x = color_jitter(x, draw, aug.jitter, aug.jitter_p)
    x = torch.where((draw() < aug.gray_p).view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
    sigma = aug.blur_sigma[0] + (aug.blur_sigma[1] - aug.blur_sigma[0]) * draw()
    x = gaussian_blur(x, sigma, draw() < spec.blur_p, spec.blur_kernel)
    x = torch.where((draw() < spec.solarize_p).view(-1, 1, 1, 1) & (x >= 0.5), 1 - x, x)
    mean, std = _normalisation(tuple(data.mean), tuple(data.std), x.device)
    x = (x - mean) / std
    if spec.cutout:
        x = cutout(x, draw, aug.cutout_area, aug.cutout_ratio)
    return x


@lru_cache(maxsize=8)
def _normalisation(mean: tuple, std: tuple, device: torch.device):
    """[1, 3, 1, 1] mean and std on the device, made once rather than copied to the device every view of every step."""
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1))


class RawBytes(torch.utils.data.Dataset):
    def __init__(self, images: ImageFolder):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item):
        index, _ = item
        return index, torch.frombuffer(bytearray(self.images.read(index)), dtype=torch.uint8)


class GpuPipeline:
    """Batches of images (indices into the on-device set, or encoded bytes) and their augmentation on the device."""

    def __init__(self, images: ImageFolder, specs: List[ViewSpec], data: DataConfig, sampler: StepSampler,
                 device: torch.device, channels_last: bool, seed: int):
        self.images, self.specs, self.data, self.sampler = images, specs, data, sampler
        self.device, self.seed = device, seed
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.bad_images: List[str] = []  # each unreadable file once, in the order met
        self.cache = self._decode_all() if data.in_memory else None

    def _decode_all(self) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(range(len(self.images)), batch_size=1024, num_workers=self.data.workers,
                                             collate_fn=self._decode_chunk)
        chunks, shapes = [], set()
        for chunk, bad in loader:
            record_unreadable(self.bad_images, bad)
            shapes |= {tuple(im.shape) for im in chunk}
            if len(shapes) > 1:
                raise ValueError(f"data.in_memory needs images of one size; {self.images.path} has {sorted(shapes)[:3]}"
                                 " ... Use data.in_memory=false.")
            chunks.append(torch.stack(chunk))
        return torch.cat(chunks).to(self.device)

    def _decode_chunk(self, indices: List[int]):
        bad: List[str] = []
        return [self.images.decode(i, lambda name, error: bad.append(name))[1] for i in indices], bad

    def batches(self, start_step: int, stop_step: int) -> Iterator:
        if self.cache is not None:
            for step in range(start_step, stop_step):
                yield self.sampler.indices(step)
            return
        loader = torch.utils.data.DataLoader(
            RawBytes(self.images), batch_sampler=StepPlan(self.sampler, start_step, stop_step),
            num_workers=self.data.workers, collate_fn=lambda items: [list(x) for x in zip(*items)],
            prefetch_factor=4 if self.data.workers else None,
        )
        yield from loader

    def decode(self, batch) -> Images:
        if self.cache is not None:
            return self.cache[batch.to(self.device)]
        indices, encoded = batch
        if self.device.type == "cuda":
            try:
                return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:
                pass  # a non-JPEG or corrupt file in the batch: decode image by image below
        images = []
        for index, data in zip(indices, encoded):
            try:
                images.append(decode_rgb(data, self.device))
            except RuntimeError:  # corrupt: ImageFolder.decode reports it and substitutes the next readable image
                _, image = self.images.decode(index, lambda name, error: record_unreadable(self.bad_images, [name]))
                images.append(image.to(self.device))
        return images

    def augment(self, batch, step: int):
        images = self.decode(batch)
        views = []
        for v, spec in enumerate(self.specs):
            generator = torch.Generator(self.device).manual_seed((self.seed * 1_000_003 + step) * 64 + v)
            draw = Draw(generator, self.sampler.global_batch, self.sampler.local_slice())
            views.append(augment_view(images, spec, self.data, draw).contiguous(memory_format=self.memory_format))
        return group_views(self.specs, views)
