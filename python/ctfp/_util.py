"""The shared rules: one home each, used by every part of ctfp.

- :func:`resolve_device`: ``"auto"``/``"cpu"``/``"cuda"``/``"cuda:N"``/``"mps"`` (or a
  ``torch.device``) to a ``torch.device``, with one validation and one set of messages.
- :func:`validate_params` with the constraint types :class:`Interval`, :class:`Options`,
  :class:`InstanceOf` and ``None``: each estimator declares a table of its parameters once
  (``_parameter_constraints``) and checks it in one place at ``fit``.
- :func:`n_jobs_to_threads`: scikit-learn's ``n_jobs`` (``None``, ``k > 0``, ``-1`` = all cores,
  ``-2`` = all but one, ...) to the ``n_threads`` the Rust functions take.
- :func:`seed_from` / :func:`check_random_state`: any ``random_state`` scikit-learn accepts to
  an integer seed / a ``RandomState``, with ctfp's one policy for ``None``
  (:data:`DEFAULT_SEED`: the same results on every run).
- :func:`check_binary_labels`: the 0/1 label rule (0 not used, 1 used), one message.
- :func:`softmax` / :func:`log_softmax`: class probabilities from ``(N, K)`` scores, stably.
- :func:`require_fitted`: ctfp's ``NotFittedError`` for an estimator used before ``fit``.
- :func:`stratified_folds`: the shuffled stratified (optionally grouped) folds every
  cross-fitting uses.
- :data:`IMAGE_SIZE`: the one range of a comparison / input size.
- :func:`torch_threads`: torch's thread count for a block of work (restored after), and the one
  warning when torch would oversubscribe the free cores.
- :func:`cudnn_autotune`: cuDNN's autotuning for a block of work, the caller's setting after.
- :func:`write_png_atomic`: a PNG (bytes, or whatever a writer puts in a file object: a
  matplotlib figure, a Pillow image) written through :func:`atomic_write`.
- :func:`atomic_write`: write a file through a temporary beside it and ``os.replace``, so a
  reader never sees half a file; the result gets the usual permissions (``0o666 & ~umask``),
  never ``mkstemp``'s owner-only 0600.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import contextlib
import io
import math
import numbers
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

# --------------------------------------------------------------------------------------------
# devices

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(device: object, name: str = "device") -> None:
    """Check ``device``'s form without importing torch (for ``fit``-time parameter checks)."""
    if isinstance(device, str) and _DEVICE_RE.fullmatch(device):
        return
    if type(device).__name__ == "device" and type(device).__module__.startswith("torch"):
        return
    accepted = ", ".join(repr(d) for d in DEVICES)
    error = ValueError if isinstance(device, str) else TypeError  # a wrong type, or a wrong name
    raise error(f"{name}: expected one of {accepted} or a torch.device, found {device!r}")


def resolve_device(device: object = "auto", name: str = "device") -> Any:
    """The ``torch.device`` for ``device``.

    ``"auto"`` picks CUDA when torch sees a GPU, then Apple's MPS, then the CPU. An explicit
    ``"cuda"``/``"cuda:N"``/``"mps"`` that this machine cannot run raises ``ValueError`` naming
    what was asked for and what is there: a request is never silently moved to another device.
    """
    check_device(device, name)
    import torch

    dev = device if isinstance(device, torch.device) else None
    if dev is None:
        if device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            mps = getattr(torch.backends, "mps", None)
            if mps is not None and mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        dev = torch.device(str(device))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name}={str(device)!r}: CUDA is not available here (torch sees no CUDA "
                f"device); use 'auto' or 'cpu'"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"{name}={str(device)!r}: this machine has {count} CUDA device(s), "
                f"numbered 0 to {count - 1}"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(
                f"{name}={str(device)!r}: MPS is not available here; use 'auto' or 'cpu'"
            )
    elif dev.type != "cpu":
        accepted = ", ".join(repr(d) for d in DEVICES)
        raise ValueError(f"{name}: expected one of {accepted}, found {str(device)!r}")
    return dev


@contextlib.contextmanager
def cudnn_autotune(enabled: bool = True) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark = enabled`` inside the block, the caller's value after.

    A process-wide torch setting: training, prediction and upscaling turn it on for their own
    work only (cuDNN times its algorithms once per input shape, then runs the fastest), never
    behind the user's back. It does nothing on the CPU.
    """
    from torch.backends import cudnn

    before = cudnn.benchmark
    cudnn.benchmark = enabled
    try:
        yield
    finally:
        cudnn.benchmark = before


_THREADS_WARNED = False


def free_cores() -> int:
    """Cores this process may use that are not busy now: the affinity mask less the 1-minute
    load average (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, int(cores - busy + 0.5))


@contextlib.contextmanager
def torch_threads(n: int | None, device: Any = "cpu") -> Iterator[None]:
    """torch's intra-op thread count for a block of work.

    ``n``: that many threads inside the block, the caller's setting restored after (a process-wide
    torch setting is never changed behind the user's back). ``None`` leaves torch as it is, but
    warns once per process when the work runs on the CPU and torch's threads exceed the free
    cores: on a small or busy machine that oversubscription slows training down many times.
    """
    import torch

    dev = getattr(device, "type", str(device))
    if n is None:
        global _THREADS_WARNED
        if dev == "cpu" and not _THREADS_WARNED and torch.get_num_threads() > free_cores():
            _THREADS_WARNED = True
            import warnings

            warnings.warn(
                f"torch uses {torch.get_num_threads()} threads but only {free_cores()} cores are "
                f"free; training on the CPU may slow down badly. Pass torch_threads= (CLI: "
                f"--torch-threads) to choose, e.g. torch_threads={free_cores()}",
                RuntimeWarning,
                stacklevel=3,
            )
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# parameter constraints (in the spirit of scikit-learn's ``_parameter_constraints``)


@dataclass(frozen=True)
class Interval:
    """A number in ``[lo, hi]``; ``None`` bounds are open-ended. ``closed`` says which ends are
    included: ``"both"``, ``"left"``, ``"right"`` or ``"neither"``. ``kind`` is ``int`` (bools
    are refused) or ``float`` (any real number, ints included; NaN never)."""

    kind: type
    lo: float | None
    hi: float | None
    closed: str = "both"

    def accepts_type(self, value: object) -> bool:
        """Whether ``value`` is a number of this kind at all (bools are not)."""
        want = numbers.Integral if self.kind is int else numbers.Real
        return isinstance(value, want) and not isinstance(value, bool)

    def accepts(self, value: object) -> bool:
        if not self.accepts_type(value):
            return False
        v = float(value)  # type: ignore[arg-type]
        if math.isnan(v):
            return False
        lo_ok = self.lo is None or (
            v >= self.lo if self.closed in ("both", "left") else v > self.lo
        )
        hi_ok = self.hi is None or (
            v <= self.hi if self.closed in ("both", "right") else v < self.hi
        )
        return lo_ok and hi_ok

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.lo is not None and self.hi is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"{what} in {left}{_num(self.lo)}, {_num(self.hi)}{right}"
        if self.lo is not None:
            op = ">=" if self.closed in ("both", "left") else ">"
            return f"{what} {op} {_num(self.lo)}"
        if self.hi is not None:
            op = "<=" if self.closed in ("both", "right") else "<"
            return f"{what} {op} {_num(self.hi)}"
        return what


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings, usually)."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        object.__setattr__(self, "values", tuple(values))

    def accepts_type(self, value: object) -> bool:
        return any(type(value) is type(v) for v in self.values)

    def accepts(self, value: object) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class InstanceOf:
    """An instance of one of ``types``; ``label`` is how the message names it."""

    types: tuple[type, ...]
    label: str

    def accepts_type(self, value: object) -> bool:
        return isinstance(value, self.types)

    def accepts(self, value: object) -> bool:
        return isinstance(value, self.types)

    def describe(self) -> str:
        return self.label


@dataclass(frozen=True)
class Check:
    """A value ``test`` accepts (for the rare rule a table cannot say); ``label`` names it.
    ``explain``, when given, raises the rule's own message for a refused value (so a rule with
    one home, like the device's, reads the same from every entry point). ``types``: the types
    the rule is about (a value of none of them is a type mistake, ``TypeError``)."""

    test: Callable[[object], bool]
    label: str
    explain: Callable[[object, str], None] | None = None
    types: tuple[type, ...] = (object,)

    def accepts_type(self, value: object) -> bool:
        if isinstance(value, bool) and bool not in self.types:
            return False  # a bool is an int to Python, never a count or a size to ctfp
        return isinstance(value, self.types)

    def accepts(self, value: object) -> bool:
        try:
            return bool(self.test(value))
        except Exception:
            return False

    def describe(self) -> str:
        return self.label


Constraint = Interval | Options | InstanceOf | Check | None

#: ``n_jobs`` as every ctfp estimator takes it: None, a positive int, or -1, -2, ...
N_JOBS: list[Constraint] = [None, Interval(int, 1, None), Interval(int, None, -1)]
#: ``torch_threads`` as every estimator that runs torch takes it (None: torch's own setting).
TORCH_THREADS: list[Constraint] = [None, Interval(int, 1, None)]
#: ``random_state`` as scikit-learn takes it.
RANDOM_STATE: list[Constraint] = [
    None,
    Interval(int, 0, 2**32 - 1),
    InstanceOf((np.random.RandomState,), "a numpy RandomState"),
]


def _is_device(value: object) -> bool:
    check_device(value)  # raises when it is not a device's form
    return True


#: ``device``: checked for its form at ``fit`` (with :func:`check_device`'s own message);
#: :func:`resolve_device` checks availability.
DEVICE: list[Constraint] = [
    Check(
        _is_device,
        "'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device",
        explain=check_device,
    )
]


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _accepts(c: Constraint, value: object) -> bool:
    return value is None if c is None else c.accepts(value)


def _accepts_type(c: Constraint, value: object) -> bool:
    return value is None if c is None else c.accepts_type(value)


def validate_params(
    params: Mapping[str, object], constraints: Mapping[str, Sequence[Constraint]], owner: str
) -> None:
    """Check each of ``params`` against its constraints (a value passes if any accepts it).

    One message names the owner, the parameter, every accepted form and the value found::

        SimilarityMembership: k: expected None or an integer >= 1, found 0

    One exception per kind of mistake: ``TypeError`` when the value is of a type no constraint
    takes (``k=2.0``, ``k=True``, ``rule=3``), ``ValueError`` when its type is right but its value
    is not (``k=0``, ``rule='best'``).
    """
    for name, value in params.items():
        allowed = constraints.get(name)
        if allowed is None:
            continue
        if any(_accepts(c, value) for c in allowed):
            continue
        for c in allowed:
            if isinstance(c, Check) and c.explain is not None:
                c.explain(value, name)  # raises the rule's own message
        forms = ["None" if c is None else c.describe() for c in allowed]
        error = ValueError if any(_accepts_type(c, value) for c in allowed) else TypeError
        raise error(f"{owner}: {name}: expected {' or '.join(forms)}, found {value!r}")


def n_jobs_to_threads(n_jobs: object, name: str = "n_jobs") -> int | None:
    """scikit-learn's ``n_jobs`` as a thread count: None stays None (ctfp's default), ``k > 0``
    is ``k``, ``-1`` is every core ctfp may use, ``-2`` all but one, and so on (at least 1)."""
    validate_params({name: n_jobs}, {name: N_JOBS}, "ctfp")
    if n_jobs is None:
        return None
    n = int(n_jobs)  # type: ignore[call-overload]
    if n > 0:
        return n
    from ctfp._core import default_threads

    return max(1, int(default_threads()) + 1 + n)


#: What ``random_state=None`` means everywhere in ctfp: this seed. A ctfp result is a number in
#: a table; run twice with the default settings, it must be the same number (scikit-learn's
#: ``None``, fresh entropy, would make every default run a different draw). An int gives that
#: seed; a ``RandomState`` is drawn from (scikit-learn's meaning).
DEFAULT_SEED = 0


def seed_from(random_state: object, name: str = "random_state") -> int:
    """An integer seed from any ``random_state`` scikit-learn accepts: an int is used as it is
    (the same int, the same seed), a ``RandomState`` is drawn from (63 bits), ``None`` is
    :data:`DEFAULT_SEED` (ctfp's one policy for ``None``)."""
    validate_params({name: random_state}, {name: RANDOM_STATE}, "ctfp")
    if random_state is None:
        return DEFAULT_SEED
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    rs = random_state
    assert isinstance(rs, np.random.RandomState)
    return int(rs.randint(0, 2**31 - 1, dtype=np.int64)) << 32 | int(
        rs.randint(0, 2**31 - 1, dtype=np.int64)
    )


def check_random_state(random_state: object, name: str = "random_state") -> np.random.RandomState:
    """A ``RandomState`` for ``random_state`` under ctfp's policy: ``None`` is
    ``RandomState(DEFAULT_SEED)``, an int ``RandomState(int)``, a ``RandomState`` itself (drawn
    from, as scikit-learn's ``check_random_state`` does)."""
    validate_params({name: random_state}, {name: RANDOM_STATE}, "ctfp")
    if isinstance(random_state, np.random.RandomState):
        return random_state
    return np.random.RandomState(DEFAULT_SEED if random_state is None else int(random_state))  # type: ignore[call-overload]


# --------------------------------------------------------------------------------------------
# images, labels, estimators

#: Smallest and largest side of an image size (a comparison size, a network's input size): 8
#: is the smallest a 7x7 SSIM window and the networks' strided stems take; 8192 bounds memory.
IMAGE_SIDE = (8, 8192)


def _is_side(v: object) -> bool:
    return (
        isinstance(v, numbers.Integral)
        and not isinstance(v, bool)
        and IMAGE_SIDE[0] <= int(v) <= IMAGE_SIDE[1]
    )


def is_image_size(value: object) -> bool:
    """Whether ``value`` is an image size: an int, or a (height, width) pair of ints, each in
    :data:`IMAGE_SIDE`."""
    if isinstance(value, (tuple, list)):
        return len(value) == 2 and all(_is_side(v) for v in value)
    return _is_side(value)


#: ``image_size`` as every ctfp estimator takes it (add ``None`` where a default size applies).
IMAGE_SIZE: list[Constraint] = [
    Check(
        is_image_size,
        f"an int or a (height, width) pair of ints in [{IMAGE_SIDE[0]}, {IMAGE_SIDE[1]}]",
        types=(numbers.Integral, tuple, list),
    )
]


def images_given(x: Any, name: str, what: str = "image") -> Any:
    """``x`` (a sequence or array of images) read once into a list or kept as an array, refused
    with one line naming the argument when it holds none: ``X: expected at least one development
    image, found none`` instead of a reshape error from deep inside."""
    if isinstance(x, (str, bytes, os.PathLike)):
        raise TypeError(f"{name}: expected a sequence of images; wrap a single image in a list")
    items = x if isinstance(x, np.ndarray) else list(x)
    if len(items) == 0:
        raise ValueError(f"{name}: expected at least one {what}, found none")
    return items


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, K)`` scores (logits), the row maximum subtracted first:
    probabilities in the scores' column order, each row summing to 1."""
    z = np.exp(scores - scores.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise logarithm of :func:`softmax`, computed stably."""
    z = scores - scores.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def check_binary_labels(y: object, name: str = "y", n: int | None = None) -> np.ndarray:
    """``y`` as int64 labels 1 (used) and 0 (not used): the one label rule of ctfp.

    ``n``: the number of labels expected (one per image). The values are checked before any
    cast to int, so a score passed as a label (0.7) is refused, never read as 0. The message
    names the argument, the rule and the first offending values with their positions::

        y: expected labels 0 (not used) and 1 (used), found 2 at position 3, 0.7 at position 5
    """
    a = np.asarray(y)
    if a.ndim != 1 or (n is not None and len(a) != n):
        want = f"{n} labels (one per image)" if n is not None else "a 1-D array of labels"
        raise ValueError(f"{name}: expected {want}, found shape {a.shape}")
    if a.dtype.kind not in "biuf":
        bad = np.arange(len(a))
    else:
        bad = np.flatnonzero(~np.isin(a, (0, 1)))
    if bad.size:
        shown = ", ".join(f"{a[i].item()!r} at position {int(i)}" for i in bad[:3])
        more = f" (+{bad.size - 3} more)" if bad.size > 3 else ""
        raise ValueError(f"{name}: expected labels 0 (not used) and 1 (used), found {shown}{more}")
    return a.astype(np.int64)


def require_fitted(est: object, attribute: str) -> None:
    """ctfp's ``NotFittedError`` (a scikit-learn one too) when ``est`` lacks ``attribute``."""
    if not hasattr(est, attribute):
        from ctfp.exceptions import NotFittedError

        raise NotFittedError(
            f"This {type(est).__name__} instance is not fitted yet: call fit(...) first"
        )


def stratified_folds(
    y: object, n_splits: int, random_state: object, groups: object = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` index pairs of ``n_splits`` shuffled stratified folds of the labels
    ``y``: scikit-learn's ``StratifiedKFold``, or with ``groups`` (one id per item)
    ``StratifiedGroupKFold``, which keeps each group whole in one fold. ``random_state``:
    anything :func:`seed_from` takes (``None``: :data:`DEFAULT_SEED`)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    random_state = seed_from(random_state) % 2**32
    lab = np.asarray(y)
    if groups is None:
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
        return list(cv.split(np.zeros(len(lab)), lab))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    return list(cv.split(np.zeros(len(lab)), lab, np.asarray(groups)))


# --------------------------------------------------------------------------------------------
# files


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` in one
    step, on error it is removed and ``path`` is left as it was.

    The temporary is created with ``O_EXCL`` and mode ``0o666`` (less the umask), so the written
    file has the permissions any other new file would get: ``tempfile.mkstemp`` would give 0600,
    which ``os.replace`` keeps, leaving files the user's group cannot read.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', found {mode!r}")
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        f: IO[Any] = open(fd, "w", encoding="utf-8", newline="") if mode == "w" else open(fd, "wb")
        with f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """``path.write_bytes(data)`` through :func:`atomic_write`."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """``path.write_text(text)`` (UTF-8, newlines as given) through :func:`atomic_write`."""
    with atomic_write(path, "w") as f:
        f.write(text)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_png_atomic(
    path: str | os.PathLike[str], png: bytes | Callable[[IO[bytes]], object]
) -> None:
    """Write a PNG file through :func:`atomic_write` (a reader never sees half an image).

    ``png``: the file's bytes, or a function that writes them to the file object it is given
    (``lambda f: fig.savefig(f, format="png")``, ``lambda f: image.save(f, format="PNG")``).
    What was written must start with the PNG signature (``ValueError`` otherwise, and ``path``
    is left as it was)."""
    if isinstance(png, (bytes, bytearray, memoryview)):
        data = bytes(png)
    else:
        buf = io.BytesIO()
        png(buf)
        data = buf.getvalue()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(
            f"{path}: expected PNG data (signature {PNG_SIGNATURE!r}), found {data[:8]!r}"
        )
    write_bytes_atomic(path, data)


def write_image_png(path: str | os.PathLike[str], image: np.ndarray, **options: Any) -> None:
    """Save a uint8 image (``(H, W)`` grey or ``(H, W, 3)``) as a PNG file atomically, through
    Pillow (``options``: Pillow's PNG options, e.g. ``compress_level``, ``pnginfo``): the one
    way ctfp writes image files."""
    from PIL import Image

    write_png_atomic(path, lambda f: Image.fromarray(image).save(f, format="PNG", **options))


# --------------------------------------------------------------------------------------------
# weights


def _examples(items: Sequence[str], sep: str = ", ", n: int = 5) -> str:
    shown = sep.join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def state_dict_mismatch(expected: Mapping[str, Any], state: Mapping[str, Any]) -> str | None:
    """What keeps ``state`` from loading into a module whose ``state_dict()`` is ``expected``:
    the missing keys, the unexpected keys and the shape mismatches, a few of each with their
    counts; None when it fits. Both are mappings of name -> tensor (anything with ``.shape``)."""
    missing = [repr(k) for k in expected if k not in state]
    unexpected = [repr(k) for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = [
        f"{len(items)} {title}: {_examples(items, sep)}"
        for title, items, sep in (
            ("missing keys", missing, ", "),
            ("unexpected keys", unexpected, ", "),
            ("shape mismatches", shapes, "; "),
        )
        if items
    ]
    return "; ".join(parts) or None
