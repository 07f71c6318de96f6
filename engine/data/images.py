"""Opening untrusted image files: regular files only (a FIFO or device named *.png is refused, never
opened for reading), the declared size checked from the header before any pixel is decoded, and
conversions to 8-bit RGB that keep 16-bit images' range."""
from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import warnings

import numpy as np

from engine.errors import EngineError

MAX_IMAGE_BYTES = 16 << 20     # one image file (a 32x32 PNG is a few KB; a 12 MP photo about 5 MB)
MAX_IMAGE_PIXELS = 64 << 20    # what `engine predict --resize` decodes: 67 MP (8192x8192), 200 MB as RGB


def read_regular(path: str, limit: int, what: str = "file", name: str | None = None) -> bytes:
    """The bytes of `path` if it is a regular file (or a link to one) of at most `limit` bytes.

    A FIFO, socket or device is refused from its stat, before it is opened; the file is then opened
    non-blocking and checked again on the open descriptor, so that one replaced in between is refused
    too without waiting for a writer.
    `name` is how messages name it (default: `path`)."""
    name = name or path
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # not even opened
            raise EngineError(f"refusing {what} {name}: not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise EngineError(f"cannot read {what} {name}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise EngineError(f"refusing {what} {name}: not a regular file")
        if st.st_size > limit:
            raise EngineError(f"refusing {what} {name}: {st.st_size} bytes is too large (limit {limit})")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise EngineError(f"cannot read {what} {name}: {e.strerror or e}") from None
    if len(data) > limit:  # it grew after the check
        raise EngineError(f"refusing {what} {name}: more than {limit} bytes")
    return data


def shape_of(img) -> str:
    """The HxW[xC] dtype an image would decode to, from its header only: e.g. '64x64x3 uint8'."""
    from PIL import Image
    w, h = img.size
    try:
        probe = np.asarray(Image.new(img.mode, (1, 1)))
        return "x".join(map(str, (h, w) + probe.shape[2:])) + f" {probe.dtype}"
    except (ValueError, OSError, KeyError):
        return f"{h}x{w} {img.mode}"


@contextlib.contextmanager
def size_checked_here():
    """Silences PIL's DecompressionBombWarning (from 89 MP) while images are opened through
    open_image, which checks sizes against a lower limit itself. Enter it once, on the main thread,
    around all the opening (threads included): the warning filters are the process's."""
    from PIL import Image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def open_image(data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS):
    """A lazily opened PIL image (header parsed, no pixel decoded) of at most `max_pixels` pixels."""
    from PIL import Image, UnidentifiedImageError
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        declared = f"{int(m.group(1)):,} pixels" if m else "more pixels than allowed"
        raise EngineError(f"refusing image {name}: it declares {declared}, over the limit of "
                          f"{max_pixels:,}") from None
    except UnidentifiedImageError:  # (its text names the BytesIO object, not the file)
        raise EngineError(f"cannot decode image {name}: not an image PIL can read (damaged, or of another "
                          f"format than its name says)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise EngineError(f"cannot decode image {name}: {e}") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise EngineError(f"refusing image {name}: it declares {w}x{h} = {w * h:,} pixels, over the limit of "
                          f"{max_pixels:,}")
    return img


def decode(img, name: str):
    """Decode the pixels of an image from open_image (a one-line error if they are damaged)."""
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise EngineError(f"cannot decode image {name}: {e}") from None
    return img


HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(img):
    """8-bit RGB of a decoded image. 16-bit greyscale (mode I;16, or I holding 0..65535) is scaled
    to 0..255 (PIL's own conversion clips it, turning almost every pixel white); palette images go
    through RGBA so that their transparency table is read; alpha is dropped."""
    from PIL import Image
    if img.mode == "RGB":
        return img
    if img.mode in HIGH_BIT_MODES:
        a = np.asarray(img).astype(np.float64)
        return Image.fromarray(np.round(np.clip(a, 0, 65535) / 257.0).astype(np.uint8)).convert("RGB")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    return img.convert("RGB")


GRAY_MODES = ("1", "L", "LA", "F", *HIGH_BIT_MODES)
RESIZE_FILTER = "bilinear"  # PIL's, which averages over the source pixels when it shrinks (antialiased)


def channels_of(img) -> int:
    """1 for a greyscale image (8- or 16-bit, with or without alpha), 3 for any other."""
    return 1 if img.mode in GRAY_MODES else 3


def to_gray(img):
    """8-bit greyscale of a decoded greyscale image (16-bit scaled to 0..255 as to_rgb does)."""
    from PIL import Image
    if img.mode in HIGH_BIT_MODES:
        a = np.asarray(img).astype(np.float64)
        return Image.fromarray(np.round(np.clip(a, 0, 65535) / 257.0).astype(np.uint8))
    return img if img.mode == "L" else img.convert("L")


def pixels(img, size: tuple | None = None) -> np.ndarray:
    """uint8 [H, W, C] of a decoded image: C = 1 for greyscale, else 3 (RGB); resized to
    size = (H, W) with PIL's bilinear filter when given and different."""
    from PIL import Image
    img = to_gray(img) if channels_of(img) == 1 else to_rgb(img)
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr
