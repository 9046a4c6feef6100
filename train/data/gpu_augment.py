"""Pipeline (b): images decoded on the device, augmented in batches with per-image randomness.

Sources: a uint8 tensor of the whole set kept on the device (``data.in_memory``, small sets; decoded once and
cached on disk by ``memory_cache.py``), or JPEG bytes read by DataLoader workers and decoded on the GPU
(``torchvision.io.decode_jpeg(..., device="cuda")``; other formats and the CPU fall back to ``decode_image``).
The operations and their parameter distributions are those of torchvision.transforms.v2 in ``cpu_augment.py``
(the tests compare the two), in MULAN's order:

    RandomResizedCrop (10 attempts, centre-crop fallback; bicubic or bilinear, antialiased) -> flip -> clamp to
    [0, 1] -> cutout (cutout views: one block filled with the mean colour) -> ColorJitter (brightness, contrast,
    saturation, hue in a random order per image) -> grayscale -> Gaussian blur -> solarize -> normalise

A step's augmentation is a pure function of (uint8 images, the step's uniform draws): ``step_draws`` makes the
draws of every view at once for the *global* batch from one generator (made once, re-seeded with (seed, step))
and slices them to this process's images, so the views do not depend on the number of processes (DDP equals
one process) and a resumed run repeats them exactly. ``make_augment`` gives the function of (images, sizes,
draws) -> views, free of host syncs and data-dependent Python control flow, which ``torch.compile(fullgraph=True)``
traces as one graph per step; the file path's batches of varying image sizes are padded into one tensor and
augmented by the same function, eagerly (their shapes change every step).
"""
import math
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from ..config import AugmentConfig, DataConfig
from .imagefolder import ImageFolder, decode_rgb, record_unreadable
from .memory_cache import decoded_set
from .sampler import StepPlan, StepSampler
from .views import ViewSpec, group_views

Images = Union[torch.Tensor, List[torch.Tensor]]  # uint8 [B, 3, H, W], or B tensors uint8 [3, Hi, Wi]
ATTEMPTS = 10  # RandomResizedCrop's and MULAN's RandomCutout's

# The columns of one view's uniform draws [B, DRAWS_PER_VIEW]: every random decision of the view, named.
_FIELDS = (("crop_area", ATTEMPTS), ("crop_ratio", ATTEMPTS), ("crop_top", 1), ("crop_left", 1), ("flip", 1),
           ("cutout_area", ATTEMPTS), ("cutout_ratio", ATTEMPTS), ("cutout_top", 1), ("cutout_left", 1),
           ("jitter", 1), ("jitter_factors", 4), ("jitter_order", 4), ("gray", 1), ("blur", 1), ("blur_sigma", 1),
           ("solarize", 1))
COLUMNS: Dict[str, slice] = {}
for _name, _width in _FIELDS:
    _start = max((s.stop for s in COLUMNS.values()), default=0)
    COLUMNS[_name] = slice(_start, _start + _width)
DRAWS_PER_VIEW = max(s.stop for s in COLUMNS.values())


def _col(u: torch.Tensor, name: str) -> torch.Tensor:
    """The draws of ``name``: [B, width], or [B] for a single draw."""
    s = COLUMNS[name]
    return u[:, s.start] if s.stop - s.start == 1 else u[:, s]


def step_draws(generator: torch.Generator, seed: int, step: int, n_views: int, n_global: int,
               local: slice) -> torch.Tensor:
    """Uniform draws [B_local, n_views, DRAWS_PER_VIEW] of a step: drawn for the global batch from ``generator``
    re-seeded with (seed, step), then sliced to this process's images."""
    generator.manual_seed(seed * 1_000_003 + step)
    u = torch.rand(n_global, n_views, DRAWS_PER_VIEW, generator=generator, device=generator.device)
    return u[local]


class Draw:
    """One view's draws [n_global, DRAWS_PER_VIEW] from a generator, sliced to ``local``: for the eager callers
    (evaluation, tests) that augment one view at a time with ``augment_view``."""

    def __init__(self, generator: torch.Generator, n_global: int, local: slice):
        self.generator, self.n_global, self.local = generator, n_global, local

    def __call__(self) -> torch.Tensor:
        device = self.generator.device
        return torch.rand(self.n_global, DRAWS_PER_VIEW, generator=self.generator, device=device)[self.local]


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


def view_from_draws(images: torch.Tensor, sizes: torch.Tensor, u: torch.Tensor, spec: ViewSpec,
                    aug: AugmentConfig, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """One view of every image: images [B, 3, H, W] (uint8, or float in 0..255; image i in its top-left
    sizes[i] = (h_i, w_i) corner), uniform draws u [B, DRAWS_PER_VIEW] -> float [B, 3, size, size], normalised."""
    boxes = random_boxes(_col(u, "crop_area"), _col(u, "crop_ratio"), _col(u, "crop_top"), _col(u, "crop_left"),
                         sizes[:, 0], sizes[:, 1], spec.scale)
    x = crop_resize(images, boxes, _col(u, "flip") < aug.flip_p, spec.size, aug.interpolation)
    if spec.cutout:  # MULAN: right after crop and flip, in pixel space, before the photometric operations
        side = torch.full_like(sizes[:, 0], spec.size)
        block = random_boxes(_col(u, "cutout_area"), _col(u, "cutout_ratio"), _col(u, "cutout_top"),
                             _col(u, "cutout_left"), side, side, aug.cutout_area, aug.cutout_ratio)
        x = torch.where(box_mask(block, spec.size, spec.size), mean, x)
    x = color_jitter(x, _col(u, "jitter"), _col(u, "jitter_factors"), _col(u, "jitter_order"), aug.jitter,
                     aug.jitter_p)
    x = torch.where((_col(u, "gray") < aug.gray_p).view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
    sigma = aug.blur_sigma[0] + (aug.blur_sigma[1] - aug.blur_sigma[0]) * _col(u, "blur_sigma")
    x = gaussian_blur(x, sigma, _col(u, "blur") < spec.blur_p, spec.blur_kernel)
    x = torch.where((_col(u, "solarize") < spec.solarize_p).view(-1, 1, 1, 1) & (x >= 0.5), 1 - x, x)
    return (x - mean) / std


def normalisation(data: DataConfig, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """[1, 3, 1, 1] mean and std of ``data`` on the device."""
    return (torch.tensor(data.mean, device=device).view(1, 3, 1, 1),
            torch.tensor(data.std, device=device).view(1, 3, 1, 1))


def make_augment(specs: Sequence[ViewSpec], data: DataConfig, device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format) -> Callable:
    """The pure augmentation of a step: (uint8 images [B, 3, H, W], sizes [B, 2], draws [B, V, K]) -> the V
    views, float [B, 3, s, s] in ``memory_format``. Constants (mean, std) are made here, once."""
    mean, std = normalisation(data, device)
    specs, aug = tuple(specs), data.augment

    def augment(images: torch.Tensor, sizes: torch.Tensor, u: torch.Tensor) -> List[torch.Tensor]:
        pixels = images.float()  # once for all views
        return [view_from_draws(pixels, sizes, u[:, v], spec, aug, mean, std).contiguous(memory_format=memory_format)
                for v, spec in enumerate(specs)]

    return augment


def as_batch(images: Images) -> Tuple[torch.Tensor, torch.Tensor]:
    """uint8 [B, 3, H, W] and sizes float [B, 2] (h, w) of each image: a list of differently sized images is
    padded into one tensor (each image in its top-left corner; the crops never reach the padding)."""
    if isinstance(images, torch.Tensor):
        sizes = torch.tensor(images.shape[2:], device=images.device, dtype=torch.float32)
        return images, sizes.expand(images.shape[0], 2)
    device = images[0].device
    H, W = max(im.shape[1] for im in images), max(im.shape[2] for im in images)
    batch = torch.zeros(len(images), 3, H, W, dtype=torch.uint8, device=device)
    for out, im in zip(batch, images):
        out[:, :im.shape[1], :im.shape[2]] = im
    sizes = torch.tensor([im.shape[1:] for im in images], device=device, dtype=torch.float32)
    return batch, sizes


def augment_view(images: Images, spec: ViewSpec, data: DataConfig, draw: Draw) -> torch.Tensor:
    """One view of a batch, eagerly, with the draws of ``draw`` (evaluation and tests)."""
    batch, sizes = as_batch(images)
    mean, std = normalisation(data, batch.device)
    return view_from_draws(batch, sizes, draw(), spec, data.augment, mean, std)


class RawBytes(torch.utils.data.Dataset):
    def __init__(self, images: ImageFolder):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item):
        index, _ = item
        return index, torch.frombuffer(bytearray(self.images.read(index)), dtype=torch.uint8)


class GpuPipeline:
    """Batches of images (indices into the on-device set, or encoded bytes) and their augmentation on the device.

    ``compile``: a torch.compile mode (``step.py``) or "none"; the in-memory path's augmentation is then one
    compiled graph per step (``fullgraph=True``); the file path stays eager (a new padded shape every step).
    """

    def __init__(self, images: ImageFolder, specs: List[ViewSpec], data: DataConfig, sampler: StepSampler,
                 device: torch.device, channels_last: bool, seed: int, compile: str = "none"):
        self.images, self.specs, self.data, self.sampler = images, specs, data, sampler
        self.device, self.seed = device, seed
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.bad_images: List[str] = []  # each unreadable file once, in the order met
        self.generator = torch.Generator(device)  # made once, re-seeded every step
        self.augment_eager = make_augment(specs, data, device, self.memory_format)
        self.augment_fn = self.augment_eager
        self.cudagraphs = compile == "reduce-overhead"  # a step's first compiled call starts a new CUDA graph step
        self.cache: Optional[torch.Tensor] = None
        if data.in_memory:
            cache, bad = decoded_set(images, self._decode_all)
            record_unreadable(self.bad_images, bad)
            self.cache = cache.to(device)
            self.sizes = torch.tensor(self.cache.shape[2:], device=device, dtype=torch.float32).expand(
                sampler.local_batch, 2)
            if compile != "none":
                from ..step import compile_options

                self.augment_fn = torch.compile(self.augment_eager, fullgraph=True, dynamic=False,
                                                **compile_options(compile))

    def _decode_all(self) -> Tuple[torch.Tensor, List[str]]:
        loader = torch.utils.data.DataLoader(range(len(self.images)), batch_size=1024, num_workers=self.data.workers,
                                             collate_fn=self._decode_chunk)
        chunks, shapes, bad_images = [], set(), []
        for chunk, bad in loader:
            record_unreadable(bad_images, bad)
            shapes |= {tuple(im.shape) for im in chunk}
            if len(shapes) > 1:
                raise ValueError(f"data.in_memory needs images of one size; {self.images.path} has {sorted(shapes)[:3]}"
                                 " ... Use data.in_memory=false.")
            chunks.append(torch.stack(chunk))
        return torch.cat(chunks), bad_images

    def _decode_chunk(self, indices: List[int]):
        bad: List[str] = []
        return [self.images.decode(i, lambda name, error: bad.append(name))[1] for i in indices], bad

    def batches(self, start_step: int, stop_step: int) -> Iterator:
        if self.cache is not None:  # the indices of a whole epoch go to the device at once: no copy per step
            per_epoch, epoch_indices = self.sampler.steps_per_epoch, (None, None)
            for step in range(start_step, stop_step):
                epoch, k = divmod(step, per_epoch)
                if epoch_indices[0] != epoch:
                    steps = range(epoch * per_epoch, (epoch + 1) * per_epoch)
                    epoch_indices = (epoch, torch.stack([self.sampler.indices(s) for s in steps]).to(self.device))
                yield epoch_indices[1][k]
            return
        loader = torch.utils.data.DataLoader(
            RawBytes(self.images), batch_sampler=StepPlan(self.sampler, start_step, stop_step),
            num_workers=self.data.workers, collate_fn=lambda items: [list(x) for x in zip(*items)],
            prefetch_factor=4 if self.data.workers else None,
        )
        yield from loader

    def decode(self, batch) -> Images:
        if self.cache is not None:
            return self.cache[batch]
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

    def draws(self, step: int) -> torch.Tensor:
        """The step's uniform draws [B_local, views, DRAWS_PER_VIEW]."""
        return step_draws(self.generator, self.seed, step, len(self.specs), self.sampler.global_batch,
                          self.sampler.local_slice())

    def augment(self, batch, step: int):
        images = self.decode(batch)
        if self.cudagraphs:  # the previous step's graph outputs (views, losses) are consumed: may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        if self.cache is not None:
            views = self.augment_fn(images, self.sizes, self.draws(step))
        else:
            views = self.augment_eager(*as_batch(images), self.draws(step))
        return group_views(self.specs, views)
