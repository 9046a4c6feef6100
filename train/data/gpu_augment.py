"""Pipeline (b): images decoded on the device, augmented in batches with per-image randomness: this module draws
the random decisions and applies the image operations of ``ops.py`` with them.

Sources: a uint8 tensor of the whole set kept on the device (``data.in_memory``, small sets; decoded once and
cached on disk by ``memory_cache.py``), or JPEG bytes read by DataLoader workers and decoded on the GPU
(``torchvision.io.decode_jpeg(..., device="cuda")``; other formats and the CPU fall back to ``decode_image``).
The operations and their parameter distributions are those of torchvision.transforms.v2 in ``cpu_augment.py``
(the tests compare the two), in MULAN's order:

    RandomResizedCrop (10 attempts, centre-crop fallback; bicubic or bilinear, antialiased) -> flip -> clamp to
    [0, 1] -> cutout (cutout views: one block filled with the mean colour) -> ColorJitter (brightness, contrast,
    saturation, hue in a random order per image) -> grayscale -> Gaussian blur -> solarize -> normalise

A step's augmentation is a pure function of (uint8 images, the step's uniform draws): ``step_draws`` makes the
draws of every view at once for the *global* batch from one generator (made once, re-seeded with the step's seed)
and slices them to this process's images, so the views do not depend on the number of processes (DDP equals
one process) and a resumed run repeats them exactly. ``make_augment`` gives the function of (images, sizes,
draws) -> views, free of host syncs and data-dependent Python control flow, which ``torch.compile(fullgraph=True)``
traces as one graph per step; the file path's batches of varying image sizes are padded into one tensor and
augmented by the same function, eagerly (their shapes change every step).
"""
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from ..compile_modes import compile_options
from ..config import AugmentConfig, DataConfig
from .imagefolder import ImageFolder, decode_rgb, record_unreadable
from .memory_cache import decoded_set
from .ops import box_mask, color_jitter, crop_resize, gaussian_blur, grayscale, random_boxes
from .pipeline import Pipeline, Views
from .sampler import StepPlan, StepSampler
from .views import ViewSpec, group_views

Images = Union[torch.Tensor, List[torch.Tensor]]  # uint8 [B, 3, H, W], or B tensors uint8 [3, Hi, Wi]
ATTEMPTS = 10  # RandomResizedCrop's and MULAN's RandomCutout's

# The columns of one view's uniform draws [B, DRAWS_PER_VIEW]: every random decision of the view, named.
_FIELDS = (("crop_area", ATTEMPTS), ("crop_ratio", ATTEMPTS), ("crop_top", 1), ("crop_left", 1), ("flip", 1),
           ("cutout_area", ATTEMPTS), ("cutout_ratio", ATTEMPTS), ("cutout_top", 1), ("cutout_left", 1),
           ("jitter", 1), ("jitter_factors", 4), ("jitter_order", 4), ("gray", 1), ("blur", 1), ("blur_sigma", 1),
           ("solarize", 1))
_STARTS = [sum(width for _, width in _FIELDS[:i]) for i in range(len(_FIELDS))]
COLUMNS: Dict[str, slice] = {name: slice(start, start + width) for (name, width), start in zip(_FIELDS, _STARTS)}
DRAWS_PER_VIEW = sum(width for _, width in _FIELDS)


def _col(u: torch.Tensor, name: str) -> torch.Tensor:
    """The draws of ``name``: [B, width], or [B] for a single draw."""
    s = COLUMNS[name]
    return u[:, s.start] if s.stop - s.start == 1 else u[:, s]


def step_draws(generator: torch.Generator, step_seed: int, n_views: int, n_global: int, local: slice) -> torch.Tensor:
    """Uniform draws [B_local, n_views, DRAWS_PER_VIEW] of a step: drawn for the global batch from ``generator``
    re-seeded with the step's seed (``StepSampler.step_seed``), then sliced to this process's images."""
    generator.manual_seed(step_seed)
    u = torch.rand(n_global, n_views, DRAWS_PER_VIEW, generator=generator, device=generator.device)
    return u[local]


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
    if spec.blur_p > 0:  # no blur kernels at all for a view that never blurs (the CIFAR recipes)
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


def augment_view(images: Images, spec: ViewSpec, data: DataConfig, generator: torch.Generator) -> torch.Tensor:
    """One view of a batch, eagerly, its draws taken from ``generator`` (evaluation and tests: a training step draws
    every view of its global batch at once, ``step_draws``)."""
    batch, sizes = as_batch(images)
    mean, std = normalisation(data, batch.device)
    u = torch.rand(len(batch), DRAWS_PER_VIEW, generator=generator, device=generator.device)
    return view_from_draws(batch, sizes, u, spec, data.augment, mean, std)


class RawBytes(torch.utils.data.Dataset):
    def __init__(self, images: ImageFolder):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item):
        index, _ = item
        return index, torch.frombuffer(bytearray(self.images.read(index)), dtype=torch.uint8)


class GpuPipeline(Pipeline):
    """The views made on the device: a batch is the step's images (indices into the on-device set, or encoded bytes
    read by DataLoader workers); ``views`` decodes and augments them.

    ``compile``: a compile mode (``compile_modes.py``) or "none"; the in-memory path's augmentation is then one
    compiled graph per step (``fullgraph=True``); the file path stays eager (a new padded shape every step).
    """

    def __init__(self, images: ImageFolder, specs: List[ViewSpec], data: DataConfig, sampler: StepSampler,
                 device: torch.device, channels_last: bool, compile: str = "none"):
        super().__init__(images, specs, data, sampler, device, channels_last)
        self.generator = torch.Generator(device)  # made once, re-seeded every step
        self.augment_eager = make_augment(specs, data, device, self.memory_format)
        self.augment_fn = self.augment_eager
        self.cache: Optional[torch.Tensor] = None
        if data.in_memory:
            cache, bad = decoded_set(images, self._decode_all)
            record_unreadable(self.bad_images, bad)
            self.cache = cache.to(device)
            self.sizes = torch.tensor(self.cache.shape[2:], device=device, dtype=torch.float32).expand(
                sampler.local_batch, 2)
            if compile != "none":
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

    def batches(self, start: int, stop: int) -> Iterator:
        if self.cache is not None:  # the indices of a whole epoch go to the device at once: no copy per step
            per_epoch, epoch_indices = self.sampler.steps_per_epoch, (None, None)
            for step in range(start, stop):
                epoch, k = divmod(step, per_epoch)
                if epoch_indices[0] != epoch:
                    steps = range(epoch * per_epoch, (epoch + 1) * per_epoch)
                    epoch_indices = (epoch, torch.stack([self.sampler.indices(s) for s in steps]).to(self.device))
                yield epoch_indices[1][k]
            return
        loader = torch.utils.data.DataLoader(
            RawBytes(self.images), batch_sampler=StepPlan(self.sampler, start, stop),
            num_workers=self.data.workers, collate_fn=lambda items: [list(x) for x in zip(*items)],
            prefetch_factor=4 if self.data.workers else None,
        )
        yield from loader

    def _decode(self, batch) -> Images:
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

    def _draws(self, step: int) -> torch.Tensor:
        """The step's uniform draws [B_local, views, DRAWS_PER_VIEW]."""
        return step_draws(self.generator, self.sampler.step_seed(step), len(self.specs), self.sampler.global_batch,
                          self.sampler.local_slice())

    def views(self, batch, step: int) -> Views:
        images = self._decode(batch)
        if self.cache is not None:
            views = self.augment_fn(images, self.sizes, self._draws(step))
        else:
            views = self.augment_eager(*as_batch(images), self._draws(step))
        return group_views(self.specs, views)
