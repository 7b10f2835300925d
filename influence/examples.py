"""The examples that define a stage: ``(x, y)`` tensors or a DataLoader, checked and streamed.

:class:`Examples` validates what the user passed (lengths, finite values, a deterministic
order where the order matters) and yields minibatches on the models' device, so that every
sum over data in :mod:`influence.multistage` runs in bounded memory.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, Subset

Batch = tuple[Tensor, Tensor]


class Examples:
    """A named set of ``(x, y)`` examples, iterated in minibatches on ``device``.

    ``data`` is a pair of tensors of equal length, or a DataLoader yielding ``(x, y)``.
    ``name`` is the argument it came from, and every error quotes it.
    """

    def __init__(
        self,
        data: Any,
        name: str,
        *,
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int,
        ordered: bool = False,
    ) -> None:
        self.name, self.device, self.dtype, self.batch_size = (
            name,
            device,
            dtype,
            batch_size,
        )
        self.window: range | None = (
            None  # set by rows(): the block of examples this view keeps
        )
        self.filtered = (
            False  # rows() over a loader it cannot rebuild: read through, keep window
        )
        if isinstance(data, DataLoader):
            if ordered and isinstance(data.sampler, RandomSampler):
                raise ValueError(
                    f"{name}: the DataLoader shuffles, so scores would come back in a random order; "
                    f"pass shuffle=False"
                )
            self.loader: DataLoader | None = data
            self.x = self.y = None
            self._check_batch(*self._first(), where="its first batch")
            return
        if (
            not isinstance(data, (tuple, list))
            or len(data) != 2
            or not all(isinstance(t, Tensor) for t in data)
        ):
            raise TypeError(
                f"{name}: expected a pair (x, y) of tensors or a DataLoader, got {type(data).__name__}"
            )
        self.loader = None
        self.x, self.y = data
        if len(self.x) != len(self.y):
            raise ValueError(
                f"{name}: x and y have different lengths ({len(self.x)} and {len(self.y)})"
            )
        if len(self.x) == 0:
            raise ValueError(f"{name}: no examples")
        self._check_batch(self.x, self.y, where="x or y")

    def _first(self) -> Batch:
        batch = next(iter(self.loader), None)
        if batch is None:
            raise ValueError(f"{self.name}: the DataLoader yields no batches")
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError(
                f"{self.name}: the DataLoader must yield (x, y) pairs, got {type(batch).__name__}"
            )
        return batch[0], batch[1]

    def _check_batch(self, x: Tensor, y: Tensor, where: str) -> None:
        for label, t in (("x", x), ("y", y)):
            if t.is_floating_point():
                if not torch.isfinite(t).all():
                    raise ValueError(f"{self.name}: {label} holds NaN or Inf ({where})")
                if label == "x" and t.dtype != self.dtype:
                    raise ValueError(
                        f"{self.name}: x is {t.dtype} but the modules are {self.dtype}; convert one of them"
                    )

    def __len__(self) -> int:
        if self.window is not None:
            return len(self.window)
        if self.loader is not None:
            return len(self.loader.dataset)
        return len(self.y)

    @property
    def num_batches(self) -> int:
        """How many minibatches one pass yields (for progress bars)."""
        if self.loader is not None and self.window is None:
            return len(self.loader)
        size = self.batch_size if self.loader is None else self.loader.batch_size or 1
        return -(-len(self) // size)

    def rows(self, block: range) -> Examples:
        """The same examples restricted to the contiguous ``block`` of indices (a rank's shard).

        Tensors are sliced; a sequential DataLoader over a sized dataset is rebuilt over a
        :class:`~torch.utils.data.Subset` with the same batching, so a rank never loads the
        rest; any other loader is read through and filtered. An empty block yields nothing.
        """
        view = copy.copy(self)
        view.window = block
        if self.loader is None:
            view.x, view.y = (
                self.x[block.start : block.stop],
                self.y[block.start : block.stop],
            )
        elif (
            isinstance(self.loader.sampler, SequentialSampler) and self.loader.batch_size
        ):
            loader = self.loader
            view.loader = DataLoader(
                Subset(loader.dataset, block),
                batch_size=loader.batch_size,
                collate_fn=loader.collate_fn,
                num_workers=loader.num_workers,
                pin_memory=loader.pin_memory,
                drop_last=loader.drop_last,
            )
        else:
            view.filtered = True
        return view

    def __iter__(self) -> Iterator[Batch]:
        if self.loader is not None:
            start = 0
            window = self.window if self.filtered else None
            for batch in self.loader:
                x, y = batch[0], batch[1]
                if len(x) != len(y):
                    raise ValueError(
                        f"{self.name}: a batch has x and y of different lengths ({len(x)}, {len(y)})"
                    )
                if window is not None:  # keep only the rows of the window
                    lo, hi = (
                        max(window.start - start, 0),
                        min(window.stop - start, len(y)),
                    )
                    start += len(y)
                    if hi <= lo:
                        if start >= window.stop:
                            return
                        continue
                    x, y = x[lo:hi], y[lo:hi]
                yield x.to(self.device), y.to(self.device)
            return
        for i in range(0, len(self.y), self.batch_size):
            yield (
                self.x[i : i + self.batch_size].to(self.device),
                self.y[i : i + self.batch_size].to(self.device),
            )

    def blocks(self, size: int) -> Iterator[Batch]:
        """Batches of exactly ``size`` examples (the last may be shorter), whatever the loader's."""
        xs: list[Tensor] = []
        ys: list[Tensor] = []
        held = 0
        for x, y in self:
            xs.append(x)
            ys.append(y)
            held += len(y)
            while held >= size:
                x_all, y_all = torch.cat(xs), torch.cat(ys)
                yield x_all[:size], y_all[:size]
                xs, ys, held = [x_all[size:]], [y_all[size:]], held - size
        if held:
            yield torch.cat(xs), torch.cat(ys)
