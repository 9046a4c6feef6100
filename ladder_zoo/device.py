"""The device a command runs on, checked: CUDA asked for where there is none is one line naming the fix, from
every entry point (``train.pretrain``, ``train.eval``, ``train.bench``, ``ladder-zoo features``, detectron2)."""
import torch


def resolve_device(name: str = "auto", setting: str = "device", sep: str = "=") -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a ``torch.device``;
    ``setting`` and ``sep`` are how the caller's user writes the option (``device=``, ``--device=``,
    ``MODEL.DEVICE ``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{setting}{sep}{name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no NVIDIA driver or GPU is visible"
            raise ValueError(f"{setting}{sep}{name}: this machine has no usable CUDA device ({build}); use {setting}{sep}cpu, "
                             "or run on a machine with an NVIDIA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{setting}{sep}{name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":
        raise ValueError(f"{setting}{sep}{name}: use auto, cpu, cuda or cuda:N")
    return device
