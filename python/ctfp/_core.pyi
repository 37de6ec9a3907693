from os import PathLike
from typing import Any, Literal, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ImageCache",
    "decode_png",
    "default_threads",
    "load_batch",
    "read_png_size",
    "sample_params",
    "ssim_matrix",
    "transform",
    "__version__",
]
__version__: str

_Source = str | PathLike[str] | bytes | npt.NDArray[np.uint8]
_Limits = tuple[int, int, int]
_AugmentTuple = tuple[float, float, float, float, bool, float, float, str, str, float]

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
    cval: float,
) -> npt.NDArray[np.uint8]: ...
def sample_params(
    augment: _AugmentTuple, *, seed: int, epoch: int, sample_id: int
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
    augments: list[_AugmentTuple | None],
    augment_of: list[int] | None,
    sampling: tuple[str, str, float],
    seed: int,
    epoch: int,
    limits: _Limits,
    cache: ImageCache | None,
    n_threads: int | None,
) -> npt.NDArray[Any]: ...
def default_threads() -> int: ...
def read_png_size(data: bytes, *, limits: _Limits) -> tuple[int, int]: ...
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
