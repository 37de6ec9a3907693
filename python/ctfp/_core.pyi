from collections.abc import Sequence
from os import PathLike
from typing import Any, Literal, Protocol, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ImageCache",
    "decode_png",
    "default_threads",
    "load_batch",
    "read_png_info",
    "read_png_size",
    "rgb_to_grey",
    "sample_params",
    "ssim_matrix",
    "transform",
    "__version__",
    "_cpu_features",
]
__version__: str

_Source = str | PathLike[str] | bytes | npt.NDArray[np.uint8]

# The core reads these arguments by attribute name (ctfp.DecodeLimits and ctfp.Augment satisfy
# them); a missing or wrongly typed attribute is a TypeError naming the field.
class _Limits(Protocol):
    @property
    def max_width(self) -> int: ...
    @property
    def max_height(self) -> int: ...
    @property
    def max_pixels(self) -> int: ...

class _Augment(Protocol):
    @property
    def hflip(self) -> float: ...
    @property
    def max_angle_deg(self) -> float: ...
    @property
    def zoom(self) -> tuple[float, float]: ...
    @property
    def zoom_per_axis(self) -> bool: ...
    @property
    def shift_frac(self) -> tuple[float, float]: ...
    @property
    def fill(self) -> str: ...
    @property
    def fill_value(self) -> float: ...
    @property
    def interpolation(self) -> str: ...

def decode_png(
    source: str | PathLike[str] | bytes, *, limits: _Limits
) -> npt.NDArray[np.uint8]: ...
def transform(
    image: npt.NDArray[np.uint8],
    *,
    flip: bool,
    angle_deg: float,
    zoom: tuple[float, float],
    shift: tuple[float, float],
    size: tuple[int, int],
    interpolation: str,
    fill: str,
    fill_value: float,
) -> npt.NDArray[np.uint8]: ...
def sample_params(
    augment: _Augment, *, seed: int, epoch: int, sample_id: int
) -> tuple[bool, float, tuple[float, float], tuple[float, float]]: ...
def load_batch(
    sources: list[Any],
    sample_ids: list[int],
    *,
    size: tuple[int, int],
    channels: int,
    dtype: Literal["uint8", "float32"] | str,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    augments: Sequence[_Augment | None],
    augment_of: list[int] | None,
    interpolation: str,
    fill: str,
    fill_value: float,
    seed: int,
    epoch: int,
    limits: _Limits,
    cache: ImageCache | None,
    n_threads: int | None,
) -> npt.NDArray[Any]: ...
def default_threads() -> int: ...
def _cpu_features() -> Literal["avx2", "portable"]: ...
def read_png_size(data: bytes, *, limits: _Limits) -> tuple[int, int]: ...
def read_png_info(data: bytes, *, limits: _Limits) -> tuple[int, int, int | None]: ...
def rgb_to_grey(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]: ...
def ssim_matrix(
    queries: npt.NDArray[np.uint8],
    references: npt.NDArray[np.uint8],
    *,
    n_threads: int | None = None,
) -> npt.NDArray[np.float32]: ...

@final
class ImageCache:
    def __new__(cls, max_bytes: int | None = None) -> ImageCache: ...
    def stats(self) -> dict[str, int]: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...
