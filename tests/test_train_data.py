"""train/data: image sources, corrupt images, and the GPU pipeline against the torchvision.transforms.v2 one.

The GPU pipeline runs on the CPU here (same code, device-agnostic); the comparison is of distributions over
many draws: crop geometry read off a coordinate-encoding image, colour statistics of real CIFAR-10 images.
"""
import io
import shutil
import tarfile

import pytest
import torch
import torch.nn.functional as F

from helpers import SAMPLE
from train.config import AugmentConfig, DataConfig
from train.data import ImageFolder, StepSampler
from train.data.cpu_augment import CpuPipeline, view_transform
from train.data.gpu_augment import GpuPipeline, augment_view
from train.data.ops import crop_resize
from train.data.imagefolder import decode_rgb
from train.data.views import ViewSpec, view_specs

N = 1600


def draws_cpu(image, spec, data, n=N):
    transform = view_transform(spec, data)
    out = []
    for k in range(n):
        torch.manual_seed(k)
        out.append(transform(image))
    return torch.stack(out)


def draws_gpu(images, spec, data, n=N):
    batch = images.expand(n, -1, -1, -1) if images.shape[0] == 1 else images.repeat(n // len(images), 1, 1, 1)
    return augment_view(batch, spec, data, torch.Generator().manual_seed(0))


def summary(values: torch.Tensor):
    values = values.double()
    return torch.cat([values.mean(0, keepdim=True), torch.quantile(values, torch.tensor([0.1, 0.5, 0.9]).double(), dim=0)])


def coordinate_image(h=40, w=56):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs * 255 // (w - 1), ys * 255 // (h - 1), torch.full_like(xs, 128)]).to(torch.uint8)


def geometry(views):
    r, g = views[:, 0], views[:, 1]
    width, height = r.amax((1, 2)) - r.amin((1, 2)), g.amax((1, 2)) - g.amin((1, 2))
    flipped = (r[:, :, -1] - r[:, :, 0]).mean(1) < 0
    return torch.stack([width, height, r.mean((1, 2)), g.mean((1, 2)), flipped.float()], 1)


PLAIN = dict(jitter_p=0.0, gray_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0))


def test_crop_geometry_matches_torchvision():
    data = DataConfig(mean=(0, 0, 0), std=(1, 1, 1), augment=AugmentConfig(**PLAIN))
    spec = ViewSpec("global", 24, (0.08, 1.0), 0.0, 0.0, 3)
    image = coordinate_image()
    ours, reference = geometry(draws_gpu(image[None], spec, data)), geometry(draws_cpu(image, spec, data))
    torch.testing.assert_close(summary(ours[:, :4]), summary(reference[:, :4]), atol=0.035, rtol=0)
    # the flip rate: a 0/1 variable (its quantiles say nothing); 1600 draws each: the difference's sd is 0.018
    assert abs(float(ours[:, 4].mean() - reference[:, 4].mean())) < 0.06


def test_cutout_area_matches_torchvision():
    data = DataConfig(mean=(0, 0, 0), std=(1, 1, 1), augment=AugmentConfig(**PLAIN))
    spec = ViewSpec("cutout", 24, (1.0, 1.0), 0.0, 0.0, 3, cutout=True)
    image = coordinate_image(32, 32) // 2 + 64  # no pixel is 0 before the cutout
    erased = lambda v: (v == 0).all(1).float().mean((1, 2))[:, None]  # noqa: E731
    ours, reference = erased(draws_gpu(image[None], spec, data)), erased(draws_cpu(image, spec, data))
    torch.testing.assert_close(summary(ours), summary(reference), atol=0.03, rtol=0)


def test_colour_statistics_match_torchvision():
    data = DataConfig(mean=(0, 0, 0), std=(1, 1, 1), augment=AugmentConfig(flip_p=0.0))
    spec = ViewSpec("global", 32, (1.0, 1.0), 0.5, 0.2, 3)  # whole image: only the colour operations vary
    images = torch.stack([decode_rgb(p.read_bytes()) for p in sorted(SAMPLE.glob("train/*/*.jpg"))])

    def stats(v):
        grayness = (v - v.mean(1, keepdim=True)).abs().mean((1, 2, 3))
        return torch.stack([*v.mean((2, 3)).T, v.std((1, 2, 3)), grayness], 1)

    ours = stats(draws_gpu(images, spec, data))
    reference = stats(torch.cat([draws_cpu(img, spec, data, N // len(images)) for img in images]))
    torch.testing.assert_close(summary(ours), summary(reference), atol=0.03, rtol=0)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_batched_crop_resize_equals_per_image_interpolation(mode):
    """The batched separable resampling weighs pixels as F.interpolate(antialias=True) on each crop does, for
    crops that upsample and crops that downsample, flipped or not, clamped as the uint8 reference saturates."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 48, 40), dtype=torch.uint8)
    h, w = torch.randint(4, 49, (24,)).float(), torch.randint(4, 41, (24,)).float()
    top, left = torch.floor(torch.rand(24) * (48 - h + 1)), torch.floor(torch.rand(24) * (40 - w + 1))
    boxes, flips = torch.stack([top, left, h, w], 1), torch.rand(24) < 0.5
    batched = crop_resize(images, boxes, flips, 24, mode)
    for image, (t, l, hh, ww), flip, ours in zip(images, boxes.long().tolist(), flips.tolist(), batched):
        crop = image[None, :, t:t + hh, l:l + ww].float() / 255
        ref = F.interpolate(crop, size=(24, 24), mode=mode, antialias=True, align_corners=False).clamp(0, 1)[0]
        torch.testing.assert_close(ours, ref.flip(-1) if flip else ref, atol=2e-5, rtol=0)
    assert (boxes[:, 2:] > 24).any() and (boxes[:, 2:] < 24).any()  # both directions were exercised


def test_tar_and_folder_sources_agree(tmp_path):
    for suffix, mode in ((".tar", "w"), (".tar.gz", "w:gz")):
        archive = tmp_path / f"sample{suffix}"
        with tarfile.open(archive, mode) as tar:
            tar.add(SAMPLE, arcname=".")
        folder, packed = ImageFolder(str(SAMPLE), "test"), ImageFolder(str(archive), "test")
        assert packed.classes == folder.classes and len(packed) == len(folder) == 40  # 4 per class
        assert torch.equal(packed.labels, folder.labels)
        assert [packed.read(i) for i in (0, 17, 39)] == [folder.read(i) for i in (0, 17, 39)]


@pytest.fixture
def folder_with_corrupt_image(tmp_path):
    root = tmp_path / "set"
    shutil.copytree(SAMPLE / "train", root)
    bad = sorted(root.glob("cat/*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated JPEG
    return root, f"cat/{bad.name}"


@pytest.mark.parametrize("pipeline", ["cpu", "gpu", "gpu_in_memory"])
def test_corrupt_image_is_skipped_and_counted(folder_with_corrupt_image, pipeline):
    root, bad_name = folder_with_corrupt_image
    images = ImageFolder(str(root))
    data = DataConfig(path=str(root), split="", workers=0, image_size=32, in_memory=pipeline == "gpu_in_memory")
    sampler = StepSampler(len(images), 40, seed=0)
    specs = [ViewSpec("global", 32, (0.08, 1.0), 0.0, 0.0, 3)] * 2
    cls = CpuPipeline if pipeline == "cpu" else GpuPipeline
    pipe = cls(images, specs, data, sampler, torch.device("cpu"), False)
    for step, batch in enumerate(pipe.batches(0, 2)):
        views = pipe.views(batch, step)
        assert views["global"][0].shape == (40, 3, 32, 32) and torch.isfinite(views["global"][1]).all()
    assert pipe.bad_images == [bad_name]


def test_sampler_shards_one_global_batch():
    whole = StepSampler(100, 8, seed=3)
    halves = [StepSampler(100, 8, seed=3, rank=r, world=2) for r in range(2)]
    for step in (0, 11, 12, 25):  # 12 steps per epoch: 11 and 12 straddle an epoch
        assert torch.equal(torch.cat([h.indices(step) for h in halves]), whole.indices(step))
        assert torch.equal(torch.cat([h.sample_seeds(step) for h in halves]), whole.sample_seeds(step))
    epoch = torch.cat([whole.indices(s) for s in range(12)])
    assert len(set(epoch.tolist())) == 96  # drop-last: each image at most once per epoch
    with pytest.raises(ValueError, match="divisible"):
        StepSampler(100, 9, seed=0, world=2)


def test_missing_data_path_says_what_to_do():
    with pytest.raises(FileNotFoundError, match="ImageFolder set"):
        ImageFolder("/no/such/data")


def test_decode_rejects_non_images():
    for data in (b"", b"not an image" * 10, io.BytesIO(b"\xff\xd8\xff\xe0" + b"\0" * 50).getvalue()):
        with pytest.raises(RuntimeError):
            decode_rgb(data)


def test_cutout_block_is_the_mean_colour_before_jitter():
    """MULAN's order: the block is filled with data.mean in pixel space right after crop and flip, so colour
    jitter then scales it (brightness here) like the rest of the image; block area and colour as the reference."""
    mean = (0.2, 0.4, 0.6)
    data = DataConfig(mean=mean, std=(1, 1, 1), augment=AugmentConfig(
        **{**PLAIN, "jitter": (0.4, 0.0, 0.0, 0.0), "jitter_p": 1.0}, cutout_area=(0.2, 0.4)))
    spec = ViewSpec("cutout", 24, (1.0, 1.0), 0.0, 0.0, 3, cutout=True)
    image = coordinate_image(32, 32)
    image[2] = 20  # no pixel of the image has the mean colour's proportions

    def block(views):
        pixels = views + torch.tensor(mean).view(1, 3, 1, 1)  # un-normalise
        r, g, b = pixels.unbind(1)
        inside = ((g - 2 * r).abs() < 1e-4) & ((b - 3 * r).abs() < 1e-4)  # a multiple of the mean colour
        area = inside.float().mean((1, 2))
        brightness = (r * inside).sum((1, 2)) / inside.sum((1, 2)).clamp(min=1) / mean[0]
        return torch.stack([area, brightness], 1)

    ours, reference = block(draws_gpu(image[None], spec, data)), block(draws_cpu(image, spec, data))
    torch.testing.assert_close(summary(ours), summary(reference), atol=0.03, rtol=0)
    assert 0.17 < float(ours[:, 0].min()) and float(ours[:, 0].max()) < 0.45  # cutout_area, sides rounded at 24 px
    assert float(ours[:, 1].std()) > 0.15  # jittered after filling: brightness factors uniform in [0.6, 1.4]


def test_step_augmentation_is_one_graph_without_breaks():
    """The in-memory path's augmentation of a step (global, local and cutout views) traces as one graph."""
    from train.data.gpu_augment import DRAWS_PER_VIEW, make_augment
    from train.data.views import view_specs

    data = DataConfig(image_size=16, augment=AugmentConfig(local_size=8))
    specs = view_specs(data, {"global": 2, "local": 2, "cutout": 1})
    augment = make_augment(specs, data, torch.device("cpu"), torch.channels_last)
    images = torch.randint(0, 256, (4, 3, 20, 24), dtype=torch.uint8)
    sizes, u = torch.tensor([20.0, 24.0]).expand(4, 2), torch.rand(4, len(specs), DRAWS_PER_VIEW)
    explained = torch._dynamo.explain(augment)(images, sizes, u)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    views = augment(images, sizes, u)
    assert [tuple(v.shape) for v in views] == [(4, 3, 16, 16)] * 2 + [(4, 3, 8, 8)] * 2 + [(4, 3, 16, 16)]


def test_in_memory_set_is_decoded_once_and_cached(tmp_path, monkeypatch):
    """Keyed by the archive's sha256 and the split: a second pipeline over the same archive decodes nothing;
    another archive content is a miss."""
    monkeypatch.setenv("LADDER_ZOO_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "sample.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(SAMPLE, arcname=".")
    data = DataConfig(path=str(archive), split="train", workers=0, image_size=32, in_memory=True)
    specs = [ViewSpec("global", 32, (0.08, 1.0), 0.0, 0.0, 3)] * 2

    def pipeline():
        images = ImageFolder(str(archive), "train")
        return GpuPipeline(images, specs, data, StepSampler(len(images), 4, seed=0), torch.device("cpu"), False)

    first = pipeline()
    assert len(list((tmp_path / "cache").glob("*-train.pt"))) == 1
    monkeypatch.setattr(GpuPipeline, "_decode_all", lambda self: pytest.fail("decoded again despite the cache"))
    second = pipeline()
    assert torch.equal(first.cache, second.cache) and first.cache.dtype == torch.uint8
    assert torch.equal(second.cache[0], decode_rgb(ImageFolder(str(archive), "train").read(0)))
    with tarfile.open(archive, "w") as tar:  # other content, same path: a new key
        tar.add(SAMPLE / "train" / "cat", arcname="train/cat")
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        pipeline()


def test_in_memory_batches_are_the_sampler_indices_across_epochs():
    """The in-memory path moves an epoch's indices to the device at once; each step still reads the sampler's."""
    images = ImageFolder(str(SAMPLE), "train")
    data = DataConfig(path=str(SAMPLE), workers=0, image_size=32, in_memory=True)
    sampler = StepSampler(len(images), 8, seed=3, rank=1, world=2)  # 5 steps per epoch; this rank's half
    pipe = GpuPipeline(images, [ViewSpec("global", 32, (0.08, 1.0), 0.0, 0.0, 3)] * 2, data, sampler,
                       torch.device("cpu"), False)
    got = list(pipe.batches(3, 12))
    assert len(got) == 9 and all(torch.equal(b, sampler.indices(s)) for s, b in zip(range(3, 12), got))


def test_views_that_never_blur_run_no_blur_kernel(monkeypatch):
    """The CIFAR recipes' blur_p is 0: their views skip the Gaussian blur (a kernel per image) altogether."""
    import train.data.gpu_augment as pipeline

    def no_blur(*args, **kwargs):
        raise AssertionError("a blur kernel ran for a view that never blurs")

    data = DataConfig(image_size=16, augment=AugmentConfig(blur_p=(0.0, 0.0)))
    spec = view_specs(data, {"global": 2})[0]
    images = torch.randint(0, 256, (2, 3, 24, 24), dtype=torch.uint8)
    monkeypatch.setattr(pipeline, "gaussian_blur", no_blur)
    pipeline.augment_view(images, spec, data, torch.Generator().manual_seed(0))
    with pytest.raises(AssertionError, match="a blur kernel ran"):  # and a view that may blur does run it
        blurred = view_specs(DataConfig(image_size=16, augment=AugmentConfig(blur_p=(1.0, 1.0))), {"global": 2})[0]
        pipeline.augment_view(images, blurred, data, torch.Generator().manual_seed(0))
