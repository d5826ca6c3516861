"""Reading tile images: plain, multi-extension and tile-compressed FITS.

An image reference is a path, optionally followed by an extension name in brackets as
in CFITSIO's extended file names: ``tiles/t00.fits[g]`` is the HDU with ``EXTNAME = g``
(case-insensitive). Without brackets the first 2-D image HDU is used.

Uncompressed images are memory-mapped: a cutout reads only its own pages. A
tile-compressed image (RICE, GZIP, fpack) must be decompressed whole, and a scaled
integer image (BSCALE/BZERO/BLANK: int16 or uint16 survey releases) scaled whole to
float32; each worker process keeps such images in a small LRU cache, so a tile is
decompressed or scaled once per worker rather than once per shard (and never once per
cutout).
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from astropy.io import fits

_REFERENCE = re.compile(r"^(?P<path>.*?)(?:\[(?P<extension>[^\[\]]+)\])?$")
#: Bytes of decompressed images each worker process keeps (env LENSFINDER_TILE_CACHE_MB).
DEFAULT_CACHE_MB = 2048
#: Header keywords of scaled integer images (BITPIX 16/32 with BSCALE/BZERO, unsigned
#: integers, BLANK): such images cannot be memory-mapped as physical values.
SCALING_KEYWORDS = ("BSCALE", "BZERO", "BLANK")


class InputError(ValueError):
    """An input file or pattern is missing or malformed; the message says which."""


def split_reference(reference: str | Path) -> tuple[Path, str | None]:
    """``"a.fits[g]"`` -> ``(Path("a.fits"), "g")``; ``"a.fits"`` -> ``(Path("a.fits"), None)``."""
    match = _REFERENCE.match(str(reference))
    return Path(match["path"]), match["extension"]


def image_hdu_index(hdul: fits.HDUList, extension: str | None = None) -> int:
    """Index of the named extension, or of the first HDU holding a 2-D image."""
    for index, hdu in enumerate(hdul):
        is_image = isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and hdu.header.get("NAXIS") == 2
        if extension is None and is_image:
            return index
        if extension is not None and hdu.name.lower() == extension.lower():
            if not is_image:
                raise InputError(f"{hdul.filename()}[{extension}] is not a 2-D image")
            return index
    wanted = f"an extension named {extension!r}" if extension else "a 2-D image HDU"
    raise InputError(f"{hdul.filename()} holds no {wanted}")


def read_header(reference: str | Path) -> fits.Header:
    """The header of the referenced image (for compressed images, the image header)."""
    path, extension = split_reference(reference)
    with fits.open(path, memmap=True) as hdul:
        return hdul[image_hdu_index(hdul, extension)].header.copy()


class ImageCache:
    """A thread-safe LRU of decompressed images, bounded in bytes, with hit/miss counts."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.images: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self.lock:
            image = self.images.get(key)
            if image is not None:
                self.images.move_to_end(key)
                self.hits += 1
            return image

    def put(self, key: tuple, image: np.ndarray) -> None:
        with self.lock:
            self.misses += 1
            if image.nbytes > self.max_bytes:
                return
            self.images[key] = image
            while sum(stored.nbytes for stored in self.images.values()) > self.max_bytes:
                self.images.popitem(last=False)


CACHE = ImageCache(int(os.environ.get("LENSFINDER_TILE_CACHE_MB", DEFAULT_CACHE_MB)) * 2**20)


def read_image(reference: str | Path) -> np.ndarray:
    """The referenced 2-D image: a memory map if stored plainly, else decompressed (cached)."""
    path, extension = split_reference(reference)
    stat = path.stat()
    key = (str(path.resolve()), extension, stat.st_size, stat.st_mtime_ns)
    cached = CACHE.get(key)
    if cached is not None:
        return cached
    with fits.open(path, memmap=True) as hdul:
        index = image_hdu_index(hdul, extension)
        hdu = hdul[index]
        scaled = not isinstance(hdu, fits.CompImageHDU) and any(word in hdu.header for word in SCALING_KEYWORDS)
        image = _scaled_image(path, index, reference) if scaled else hdu.data
        if image is None or image.ndim != 2:
            raise InputError(f"{reference} holds no 2-D image data")
        if isinstance(hdu, fits.CompImageHDU) or scaled:
            image = np.asarray(image, dtype=np.float32)
            CACHE.put(key, image)
    return image


def _scaled_image(path: Path, index: int, reference: str | Path) -> np.ndarray | None:
    """A BSCALE/BZERO/BLANK image as float32 physical values, BLANK pixels NaN.

    Astropy cannot memory-map scaled data; the stored integers are memory-mapped as
    they are and scaled here once (the result is cached like a decompressed tile).
    Covers scaled int16/int32 and unsigned uint16/uint32 (BZERO = 2**15, 2**31).
    """
    with fits.open(path, memmap=True, do_not_scale_image_data=True) as hdul:
        hdu = hdul[index]
        raw = hdu.data
        if raw is None or raw.ndim != 2:
            raise InputError(f"{reference} holds no 2-D image data")
        header = hdu.header
        bscale, bzero = float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0))
        image = np.empty(raw.shape, dtype=np.float32)
        # Row blocks keep the float64 intermediate small for large tiles.
        step = max(1, (64 << 20) // max(1, raw.shape[1] * 8))
        blank = header.get("BLANK") if raw.dtype.kind in "iu" else None
        for start in range(0, raw.shape[0], step):
            block = np.asarray(raw[start:start + step])
            values = block.astype(np.float64) * bscale + bzero
            if blank is not None:
                values[block == blank] = np.nan
            image[start:start + step] = values
    return image


def cache_stats() -> dict[str, int]:
    """This process's decompressed-image cache: hits, misses (decompressions), images and bytes held."""
    with CACHE.lock:
        return {"hits": CACHE.hits, "misses": CACHE.misses, "images": len(CACHE.images),
                "bytes": sum(image.nbytes for image in CACHE.images.values())}


def clear_cache() -> None:
    """Forget this process's decompressed images (counts are kept)."""
    with CACHE.lock:
        CACHE.images.clear()
