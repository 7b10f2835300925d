"""A resumable scores file: one row per candidate, written by global index, with a 'written' flag.

Scoring millions of candidates can outlast a job's time limit. :meth:`~influence.multistage.MultiStage.scores` with
``scores_file=path`` writes each candidate's row into this file as soon as its batch is scored,
and a rerun with the same arguments scores only the rows not yet written.

The format is NumPy's ``.npy`` version 1.0 (written here with the standard library and torch,
no numpy): the 8-byte magic ``\\x93NUMPY\\x01\\x00``, a 2-byte little-endian header length, an
ASCII header padded with spaces to a multiple of 64 bytes and ending in a newline, then the rows.
The array is one-dimensional, one record per candidate, of the structured dtype

- ``[('written', '<f8'), ('score', '<f8')]`` for scores summed over the test points, or
- ``[('written', '<f8'), ('score', '<f8', (n_test,))]`` with ``per_test=True``;

``written`` is 1.0 once the row's scores are in place and 0.0 before (a killed run leaves 0.0
in every row it did not finish, since the flag is set after the scores). So
``numpy.load(path, mmap_mode="r")["score"]`` reads the scores and :func:`read` does it in torch.
Every field is little-endian float64 and the data starts 64-byte aligned, so the file is also a
plain ``[n, 1 + n_test]`` float64 matrix after its header, which is how ranks write their rows
into it at once through a shared memory map. The file records its shape, not the problem it
scores: a rerun against other models or data must use a new path.
"""

from __future__ import annotations

import ast
import os
import struct
from pathlib import Path

import torch
from torch import Tensor

MAGIC = b"\x93NUMPY\x01\x00"
_ALIGN = 64


def _descr(n_test: int | None) -> list[tuple]:
    score = ("score", "<f8") if n_test is None else ("score", "<f8", (n_test,))
    return [("written", "<f8"), score]


def _header(n: int, n_test: int | None) -> bytes:
    text = repr({"descr": _descr(n_test), "fortran_order": False, "shape": (n,)})
    unpadded = len(MAGIC) + 2 + len(text) + 1
    text += " " * (-unpadded % _ALIGN) + "\n"
    return MAGIC + struct.pack("<H", len(text)) + text.encode("latin1")


def _read_header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"scores_file: {path} is not a .npy version 1.0 file")
        (length,) = struct.unpack("<H", f.read(2))
        header = ast.literal_eval(f.read(length).decode("latin1"))
    return len(MAGIC) + 2 + length, header


class ScoresFile:
    """The rows of a scores file, memory-mapped for reading and writing by global index."""

    def __init__(self, path: str | os.PathLike, n: int, n_test: int | None) -> None:
        """Open ``path``, which must hold ``n`` rows of the layout ``n_test`` names (see module doc)."""
        self.path, self.n, self.n_test = Path(path), n, n_test
        offset, header = _read_header(self.path)
        expected = {"descr": _descr(n_test), "fortran_order": False, "shape": (n,)}
        if header != expected or offset % 8:
            raise ValueError(
                f"scores_file: {self.path} holds {header}, but this call scores {expected}; "
                f"use a new path for a different problem"
            )
        width = 1 + (1 if n_test is None else n_test)
        size = offset // 8 + n * width
        if self.path.stat().st_size < size * 8:
            raise ValueError(f"scores_file: {self.path} is truncated")
        mapped = torch.from_file(
            str(self.path), shared=True, size=size, dtype=torch.float64
        )
        self.rows = mapped[offset // 8 :].view(n, width)  # writes go straight to the file

    @classmethod
    def create(cls, path: str | os.PathLike, n: int, n_test: int | None) -> ScoresFile:
        """Make an empty file (every row unwritten) unless ``path`` exists; then open it."""
        path = Path(path)
        if not path.exists():
            header = _header(n, n_test)
            width = 1 + (1 if n_test is None else n_test)
            partial = path.with_name(path.name + ".partial")
            with open(partial, "wb") as f:
                f.write(header)
                f.truncate(len(header) + 8 * n * width)  # zeros: nothing written yet
            partial.replace(path)  # a file at `path` is always complete
        return cls(path, n, n_test)

    @property
    def written(self) -> Tensor:
        """``[n]`` bool: which rows hold their scores."""
        return self.rows[:, 0] == 1.0

    def scores(self) -> Tensor:
        """The scores, ``[n]`` or ``[n, n_test]`` (rows not written yet are 0)."""
        values = self.rows[:, 1:].clone()
        return values[:, 0] if self.n_test is None else values

    def write(self, start: int, values: Tensor) -> None:
        """Rows ``start, start + 1, ...`` get ``values`` (``[b]`` or ``[b, n_test]``), then their flags."""
        values = values.detach().to("cpu", torch.float64).reshape(len(values), -1)
        self.rows[start : start + len(values), 1:] = values
        self.rows[start : start + len(values), 0] = (
            1.0  # after the scores: a kill leaves 0
        )


def read(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """A scores file's ``(scores, written)`` as torch tensors, whatever its row count and layout."""
    _, header = _read_header(Path(path))
    score = header["descr"][1]
    n_test = score[2][0] if len(score) == 3 else None
    file = ScoresFile(path, header["shape"][0], n_test)
    return file.scores(), file.written.clone()
