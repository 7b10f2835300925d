"""The datasets of the paper's experiments (section 5), loaded through torchvision's real loaders.

Where the files come from:

- Online (``INFLUENCE_DATA`` unset): torchvision downloads into ``~/.cache/influence``
  as usual, the first time a loader is called. Nothing is downloaded at import time.
- Offline (``INFLUENCE_DATA`` set): only that folder is read and nothing is downloaded.
  It is laid out as torchvision expects: ``MNIST/raw/`` with the four IDX files, and for
  CIFAR-10 either the official ``cifar-10-batches-py/`` or the lossless archive
  ``cifar10/cifar10.npz`` (arrays ``x_train`` [50000, 32, 32, 3] uint8 HWC, ``y_train``,
  ``x_test``, ``y_test``). CI points it at ``../shared/data``.

Images come back as float32 in [0, 1], channels first, with int64 labels; no mean is
subtracted. Full CIFAR-10 as float32 is 600 MB, so ``raw=True`` returns the uint8 pixels
instead: select a task with :func:`task_split` first, then convert the subset with
:func:`to_unit`.

>>> x, y = task_split(*load_cifar10(train=True, raw=True), classes=[0, 8], n=1000)
>>> x = to_unit(x)   # [1000, 3, 32, 32] float32, labels 0 (airplane) and 1 (ship)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

ENV_VAR = "INFLUENCE_DATA"
DEFAULT_ROOT = Path.home() / ".cache" / "influence"

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk and may not be downloaded. The message says where we looked."""


def data_root() -> Path:
    """The folder datasets are read from: ``$INFLUENCE_DATA`` if set, else ``~/.cache/influence``.

    A relative ``INFLUENCE_DATA`` is taken relative to the current directory, which for a
    notebook is the notebook's folder; the Makefile and ``.ci/run`` export an absolute path.
    """
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser().resolve() if value else DEFAULT_ROOT


def offline() -> bool:
    """True when ``INFLUENCE_DATA`` is set: read that folder only, never download."""
    return bool(os.environ.get(ENV_VAR, "").strip())


def _not_found(name: str, looked: Sequence[Path]) -> DatasetNotFoundError:
    places = "\n".join(f"  {p}" for p in looked)
    return DatasetNotFoundError(
        f"{name} not found. Looked in:\n{places}\n"
        f"Provide it offline by setting {ENV_VAR} to a folder laid out as torchvision expects "
        f"(e.g. ../shared/data), or unset {ENV_VAR} to let torchvision download it into {DEFAULT_ROOT}."
    )


def load_mnist(train: bool = True, *, raw: bool = False) -> tuple[Tensor, Tensor]:
    """MNIST via ``torchvision.datasets.MNIST``: images [N, 1, 28, 28] and int64 labels.

    Images are float32 in [0, 1], or with ``raw=True`` the uint8 pixels. N is 60,000 for
    ``train=True`` and 10,000 otherwise.
    """
    from torchvision.datasets import MNIST

    root = data_root()
    raw_dir = root / "MNIST" / "raw"
    try:
        ds = MNIST(str(root), train=train, download=not offline())
    except RuntimeError as err:  # torchvision's "Dataset not found"
        raise _not_found("MNIST", [raw_dir]) from err
    x = ds.data.unsqueeze(1)
    return (x if raw else to_unit(x)), ds.targets.to(torch.int64)


def load_cifar10(train: bool = True, *, raw: bool = False) -> tuple[Tensor, Tensor]:
    """CIFAR-10: images [N, 3, 32, 32] and int64 labels in the order of :data:`CIFAR10_CLASSES`.

    Images are float32 in [0, 1], or with ``raw=True`` the uint8 pixels. N is 50,000 for
    ``train=True`` and 10,000 otherwise. Read with ``torchvision.datasets.CIFAR10`` where
    ``cifar-10-batches-py/`` is under the data root (or may be downloaded), else from the
    archive ``cifar10/cifar10.npz``, which holds the same pixels in the official order.
    """
    root = data_root()
    batches, archive = root / "cifar-10-batches-py", root / "cifar10" / "cifar10.npz"
    if archive.is_file() and not batches.is_dir():
        with np.load(archive) as npz:
            split = "train" if train else "test"
            hwc, labels = npz[f"x_{split}"], npz[f"y_{split}"]
    else:  # the official batches, downloaded first when online
        hwc, labels = _cifar10_torchvision(root, train, looked=[batches, archive])
    x = torch.from_numpy(np.ascontiguousarray(hwc)).permute(0, 3, 1, 2)
    return (x if raw else to_unit(x)), torch.as_tensor(
        np.asarray(labels), dtype=torch.int64
    )


def _cifar10_torchvision(
    root: Path, train: bool, looked: Sequence[Path]
) -> tuple[np.ndarray, list[int]]:
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(root), train=train, download=not offline())
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise _not_found("CIFAR-10", looked) from err
    return ds.data, ds.targets


def to_unit(x: Tensor) -> Tensor:
    """uint8 pixels to float32 in [0, 1]."""
    if x.dtype != torch.uint8:
        raise TypeError(f"x: expected uint8 pixels, got {x.dtype}")
    return x.to(torch.float32).div_(255)


def task_split(
    x: Tensor,
    y: Tensor,
    classes: Sequence[int],
    n: int | None = None,
    seed: int = 0,
    relabel: bool = True,
) -> tuple[Tensor, Tensor]:
    """The examples of ``classes``, as the paper builds its pretraining and finetuning tasks.

    ``n`` draws that many of them without replacement from a generator seeded with ``seed``
    (kept in dataset order, so the same seed gives the same subset). ``relabel`` maps
    ``classes[k]`` to label ``k``, in the order given. Works on uint8 or float images alike.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y: expected the same length, got {len(x)} and {len(y)}")
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes: expected distinct class labels, got {classes}")
    missing = [c for c in classes if not bool((y == c).any())]
    if missing:
        raise ValueError(f"classes: {missing} do not occur in y")
    index = torch.nonzero(
        torch.isin(y, torch.tensor(classes, dtype=y.dtype)), as_tuple=True
    )[0]
    if n is not None:
        if not 0 < n <= len(index):
            raise ValueError(
                f"n: expected 1 to {len(index)} (the examples of classes {classes}), got {n}"
            )
        pick = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[
            :n
        ]
        index = index[pick.sort().values]
    xs, ys = x[index], y[index]
    if relabel:
        lookup = torch.full((int(y.max()) + 1,), -1, dtype=torch.int64)
        lookup[torch.tensor(classes)] = torch.arange(len(classes))
        ys = lookup[ys.to(torch.int64)]
    return xs, ys.to(torch.int64)
