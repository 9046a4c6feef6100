"""ImageFolder-layout image sets (``root/[split/]<class>/<image>``) from a folder or a tar, read as raw bytes.

A ``.tar`` is indexed once (member offsets) and read by seek, so a multi-GB archive needs no unpacking; a
``.tar.gz`` cannot be read by seek and is decompressed into memory (meant for small sets such as CIFAR-10).
Decoding happens where the pipeline wants it (DataLoader workers, or the GPU); an image that cannot be decoded
is replaced by the next readable one and counted, never a reason to stop a run.
"""
import io
import os
import tarfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torchvision.io import ImageReadMode, decode_image

from ladder_zoo.image_files import IMAGE_SUFFIXES

PILLOW_ONLY = (b"BM", b"II*\x00", b"MM\x00*")  # BMP and TIFF signatures: formats torchvision.io does not decode


class ImageFolder:
    def __init__(self, path: str, split: str = ""):
        self.path = Path(path)
        self.split = split.strip("/")
        if not self.path.exists():
            raise FileNotFoundError(
                f"data.path={path} does not exist. Unpack an ImageFolder set there (root/<class>/<image>), or point "
                "data.path at a .tar / .tar.gz holding one (e.g. cifar10-jpeg.tar.gz with data.split=train)."
            )
        self._tar_handle: Optional[Tuple[int, object]] = None
        self._blobs: Optional[List[bytes]] = None
        self._offsets: Optional[List[Tuple[int, int]]] = None
        self._top: List[str] = []  # the first-level folders seen, to name them when the split is not among them
        if self.path.is_dir():
            entries = self._scan_folder()
        else:
            entries = self._scan_tar()
        if not entries:
            raise FileNotFoundError(self._nothing_found())
        self.classes = sorted({cls for cls, _ in entries})
        class_index = {c: i for i, c in enumerate(self.classes)}
        self.names = [name for _, name in entries]
        self.labels = torch.tensor([class_index[cls] for cls, _ in entries])

    def __len__(self) -> int:
        return len(self.names)

    def read(self, i: int) -> bytes:
        if self._blobs is not None:
            return self._blobs[i]
        if self._offsets is not None:
            offset, size = self._offsets[i]
            handle = self._tar()
            handle.seek(offset)
            return handle.read(size)
        return (self.path / self.names[i]).read_bytes()

    def decode(self, i: int, on_bad: Callable[[str, Exception], None]) -> Tuple[int, torch.Tensor]:
        """(index, uint8 [3, H, W]) of image i, or of the next decodable one after reporting each bad one."""
        for j in (i + k for k in range(len(self))):
            j %= len(self)
            try:
                return j, decode_rgb(self.read(j))
            except (RuntimeError, ValueError) as e:
                on_bad(self.names[j], e)
        raise RuntimeError(f"no decodable image in {self.path}")

    # --- listing -------------------------------------------------------------------------------------------
    def _nothing_found(self) -> str:
        where = f"{self.path}{'/' + self.split if self.split else ''}/<class>/<image>"
        top = sorted(set(self._top))
        if self.split and self.split not in top:
            listed = ", ".join(top[:5]) + (", ..." if len(top) > 5 else "") if top else "no folders"
            return (f"data.path={self.path} has no '{self.split}' folder (data.split={self.split}); it holds {listed}. "
                    f"Set data.split to the folder of the split, or data.split= (empty) when {self.path} holds the "
                    "class folders itself")
        return f"no images under {where} ({', '.join(IMAGE_SUFFIXES)})"

    def _scan_folder(self) -> List[Tuple[str, str]]:
        self._top = [d.name for d in os.scandir(self.path) if d.is_dir()]
        root = self.path / self.split if self.split else self.path
        if not root.is_dir():
            return []
        entries = []
        for cls in sorted(d.name for d in os.scandir(root) if d.is_dir()):
            for f in sorted(os.listdir(root / cls)):
                if f.lower().endswith(IMAGE_SUFFIXES):
                    entries.append((cls, f"{self.split + '/' if self.split else ''}{cls}/{f}"))
        return entries

    def _scan_tar(self) -> List[Tuple[str, str]]:
        prefix = self.split + "/" if self.split else ""
        in_memory = not str(self.path).endswith(".tar")
        found = []  # (class, member name, bytes or (offset, size)), read in archive order: a gzip stream cannot seek back
        with tarfile.open(self.path, "r:*" if in_memory else "r:") as tar:
            for m in tar:
                name = m.name[2:] if m.name.startswith("./") else m.name
                if m.isdir() or "/" in name:
                    self._top.append(name.split("/")[0])
                parts = name[len(prefix):].split("/")
                if m.isfile() and name.startswith(prefix) and len(parts) == 2 and name.lower().endswith(IMAGE_SUFFIXES):
                    found.append((parts[0], m.name, tar.extractfile(m).read() if in_memory else (m.offset_data, m.size)))
        found.sort(key=lambda f: f[1])
        if in_memory:
            self._blobs = [f[2] for f in found]
        else:
            self._offsets = [f[2] for f in found]
        return [(cls, name) for cls, name, _ in found]

    def _tar(self):
        pid = os.getpid()  # one handle per process: DataLoader workers must not share a file position
        if self._tar_handle is None or self._tar_handle[0] != pid:
            self._tar_handle = (pid, open(self.path, "rb"))
        return self._tar_handle[1]

    def __getstate__(self) -> Dict:
        state = dict(self.__dict__)
        state["_tar_handle"] = None
        return state


def decode_rgb(data: Union[bytes, torch.Tensor], device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """uint8 [3, H, W] RGB from encoded bytes (torchvision.io; BMP and TIFF, which it does not decode, by Pillow);
    RuntimeError for data that is not a decodable image."""
    if len(data) == 0:
        raise RuntimeError("empty file")
    head = bytes(data[:4].tolist()) if isinstance(data, torch.Tensor) else bytes(data[:4])
    if head.startswith(PILLOW_ONLY):
        return _decode_with_pillow(data.numpy().tobytes() if isinstance(data, torch.Tensor) else bytes(data)).to(device)
    encoded = data if isinstance(data, torch.Tensor) else torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return decode_image(encoded, mode=ImageReadMode.RGB).to(device)


def _decode_with_pillow(raw: bytes) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(io.BytesIO(raw)) as image:
            return pil_to_tensor(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for a truncated or corrupt file
        raise RuntimeError(f"not a readable image: {e}") from e


def record_unreadable(seen: List[str], names: List[str]) -> None:
    """Add ``names`` to the pipeline's list of unreadable files: each file once, in the order first met."""
    seen += [name for name in dict.fromkeys(names) if name not in seen]
