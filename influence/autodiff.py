"""Derivatives of losses with respect to flat parameter vectors.

Every quantity of the paper is a derivative of a mean loss with respect to one block of
parameters, (W, U) for pretraining or Theta (or (W, Theta)) for finetuning. This file
works with such blocks as flat vectors:

- :class:`ParamSpace` maps a module's parameters to one flat vector and back;
- :func:`hvp` and :func:`mixed_vjp` are Hessian-vector and mixed second-derivative products
  by double backprop (Pearlmutter's trick, the paper's reference [4]);
- :class:`DataHessian` streams such products over the minibatches of a dataset, so that
  memory is bounded by the batch, not by the data;
- :func:`jvp_losses` and :func:`per_example_grads` turn a vector v into the directional
  derivatives ``v . dg(z)/dparams`` of many examples at once.

A block of vectors (shape ``[k, p]``) is accepted wherever one vector (shape ``[p]``) is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from . import distributed

Batch = tuple[Tensor, Tensor]
# f(params, x, y) -> per-example losses [B]; params is a flat vector
LossesFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ParamSpace:
    """The named parameters of a module, laid end to end as one flat vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, module: nn.Module) -> ParamSpace:
        """The parameter space of ``module``, in ``named_parameters`` order."""
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(p.shape for _, p in named))

    @property
    def numel(self) -> int:
        """How many numbers the flat vector holds."""
        return sum(s.numel() for s in self.shapes)

    def flatten(self, tensors: Mapping[str, Tensor] | nn.Module) -> Tensor:
        """Concatenate the named tensors (or a module's parameters) into one detached vector."""
        if isinstance(tensors, nn.Module):
            tensors = dict(tensors.named_parameters())
        return torch.cat([tensors[n].detach().reshape(-1) for n in self.names])

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Split a flat vector into views shaped like the parameters (autograd flows through)."""
        if vector.shape[-1] != self.numel:
            raise ValueError(
                f"vector has {vector.shape[-1]} entries, the parameters have {self.numel}"
            )
        pieces = torch.split(vector, [s.numel() for s in self.shapes], dim=-1)
        return {
            n: p.reshape(*vector.shape[:-1], *s)
            for n, p, s in zip(self.names, pieces, self.shapes)
        }


def call(module: nn.Module, space: ParamSpace, vector: Tensor, *args: Any) -> Tensor:
    """Run ``module(*args)`` with its parameters replaced by the flat ``vector``."""
    return functional_call(module, space.unflatten(vector), args)


def _leaf(vector: Tensor) -> Tensor:
    return vector.detach().requires_grad_(True)


def _backward(output: Tensor, inputs: Tensor, v: Tensor) -> Tensor:
    """``d(output . v)/d inputs``; a block ``v`` reuses the graph column by column.

    (``is_grads_batched`` would vmap the backward pass; on CPU that is slower than the loop.)
    """
    if v.dim() == 1:
        return torch.autograd.grad(output, inputs, v)[0]
    return torch.stack(
        [torch.autograd.grad(output, inputs, vi, retain_graph=True)[0] for vi in v]
    )


def hvp(fn: Callable[[Tensor], Tensor], at: Tensor, v: Tensor) -> Tensor:
    """Hessian-vector product ``d2 fn/dx2 (at) . v`` by double backprop.

    ``v`` may be one vector ``[p]`` or a block ``[k, p]``; the block shares one forward pass
    and one first backward pass.
    """
    x = _leaf(at)
    (g,) = torch.autograd.grad(fn(x), x, create_graph=True)
    return _backward(g, x, v).detach()


def mixed_vjp(
    fn: Callable[[Tensor, Tensor], Tensor], a: Tensor, b: Tensor, v: Tensor
) -> Tensor:
    """``(d2 fn / da db)^T . v``: the b-gradient of ``dfn/da . v`` (v lives in a's space).

    With ``fn = F``, ``a = Theta`` and ``b = W`` this is line 3 of Algorithm 1,
    ``(d2F / dTheta dW)^T v1``, computed by double backprop.
    """
    xa, xb = _leaf(a), _leaf(b)
    (ga,) = torch.autograd.grad(fn(xa, xb), xa, create_graph=True)
    return _backward(ga, xb, v).detach()


def gradient(fn: Callable[[Tensor], Tensor], at: Tensor) -> Tensor:
    """The gradient of a scalar function of a flat vector."""
    x = _leaf(at)
    (g,) = torch.autograd.grad(fn(x), x)
    return g.detach()


def data_mean(
    fn: Callable[[Tensor, Tensor], Tensor],
    batches: Iterable[Batch],
    like: Tensor | None = None,
) -> Tensor:
    """The mean over examples of a per-batch mean ``fn(x, y)``, weighting each batch by its size.

    During a sharded :meth:`~influence.MultiStage.scores` call (see :mod:`influence.distributed`)
    ``batches`` are this rank's block of the data: the weighted sums and counts of all ranks are
    added by one all-reduce, so every rank gets the mean over all the data. ``like`` (a tensor
    of the result's shape, dtype and device) stands in for a rank whose block is empty, and a
    rank that fails here passes its error to the others at that all-reduce.
    """
    group = distributed.active()
    total, n, failure = None, 0, None
    try:
        for x, y in batches:
            part = len(y) * fn(x, y)
            total = part if total is None else total + part
            n += len(y)
    except Exception as error:  # noqa: BLE001  (reported to every rank below)
        if group is None:
            raise
        failure = distributed.describe(error)
    if group is not None:
        if total is None:
            if like is None:
                raise ValueError("data_mean: a rank with no examples needs `like`")
            total = torch.zeros_like(like)
        summed = group.sum_or_fail(
            torch.cat([total.reshape(-1), total.new_tensor([n])]), failure
        )
        total, n = summed[:-1].reshape(total.shape), int(summed[-1].item())
    if total is None or n == 0:
        raise ValueError("no examples to average over")
    return total / n


class DataHessian:
    """The Hessian of ``mean over data of losses(params) + diagonal * ||params||^2 / 2`` at ``at``.

    It is never materialized (except by :meth:`to_dense`, for small models): :meth:`matvec`
    streams Hessian-vector products over the minibatches that ``batches()`` yields, weighting
    each by its share of the examples, so memory is bounded by one batch.

    ``diagonal`` is a number or a vector added to the diagonal: an L2 coefficient, and in
    Case 2 the ``2 * alpha`` of the proximity term on the W-block (eq. 15).
    """

    def __init__(
        self,
        losses: LossesFn,
        at: Tensor,
        batches: Callable[[], Iterable[Batch]],
        diagonal: float | Tensor = 0.0,
    ) -> None:
        self.losses, self.at, self.batches, self.diagonal = (
            losses,
            at.detach(),
            batches,
            diagonal,
        )
        self.matvecs = 0  # how many products were asked for: the cost unit of the solvers

    @property
    def dim(self) -> int:
        """The number of parameters: the Hessian is ``dim x dim``."""
        return self.at.numel()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the parameters, and so of the vectors :meth:`matvec` takes."""
        return self.at.dtype

    @property
    def device(self) -> torch.device:
        """The device of the parameters, and so of the vectors :meth:`matvec` takes."""
        return self.at.device

    def matvec(self, v: Tensor) -> Tensor:
        """``H v`` (or ``H V`` for a block ``V`` of shape ``[k, p]``)."""
        self.matvecs += 1 if v.dim() == 1 else v.shape[0]
        data = data_mean(
            lambda x, y: hvp(lambda p: self.losses(p, x, y).mean(), self.at, v),
            self.batches(),
            like=v,
        )
        return data + self.diagonal * v

    def loss_gradient(self) -> Tensor:
        """The gradient of the mean loss alone (no diagonal term) at ``at``, streamed the same way."""
        return data_mean(
            lambda x, y: gradient(lambda p: self.losses(p, x, y).mean(), self.at),
            self.batches(),
            like=self.at,
        )

    def to_dense(self, block: int = 256) -> Tensor:
        """The Hessian as a ``[p, p]`` matrix, from products with blocks of unit vectors."""
        eye = torch.eye(self.dim, dtype=self.at.dtype, device=self.at.device)
        cols = [self.matvec(eye[i : i + block]) for i in range(0, self.dim, block)]
        dense = torch.cat(cols)
        return (dense + dense.T) / 2  # exact up to rounding; symmetrize the rounding away


def jvp_losses(
    losses: Callable[[Tensor], Tensor], at: Tensor, tangents: Tensor
) -> Tensor:
    """Directional derivatives of a vector of per-example losses: ``J(at) . t``.

    This scores a whole batch of candidates at once (line 5 of Algorithm 1): with ``t = v2`` the
    result is ``v2 . dg(z)/d(W,U)`` for every z in the batch, about one forward pass of cost,
    with no per-example gradient materialized. ``tangents`` is ``[p]`` (result ``[B]``) or a
    block ``[k, p]`` (result ``[B, k]``).

    Forward mode (:func:`torch.func.jvp`) is tried first; where an operation lacks a forward
    derivative (torch raises :class:`NotImplementedError`, e.g. for the fused CPU and cuDNN
    LSTM kernels), the double-backward trick computes the same product by reverse mode. Every
    other error (a shape error, CUDA out of memory) is raised as it is.
    """
    try:
        with warnings.catch_warnings():
            # torch's own forward-mode decompositions call the deprecated torch.jit.script once
            warnings.filterwarnings(
                "ignore", message=".*torch.jit.script.*", category=FutureWarning
            )
            if tangents.dim() == 1:
                return jvp(losses, (at,), (tangents,))[1].detach()
            return vmap(lambda t: jvp(losses, (at,), (t,))[1], out_dims=1)(
                tangents
            ).detach()
    except NotImplementedError as error:
        if "forward AD" not in str(error):
            raise
        return _jvp_by_double_backward(losses, at, tangents)


def _jvp_by_double_backward(
    losses: Callable[[Tensor], Tensor], at: Tensor, tangents: Tensor
) -> Tensor:
    # J t = d/du [ (J^T u) . t ]: a vjp, differentiated once more in its cotangent u.
    x = _leaf(at)
    out = losses(x)
    u = torch.zeros_like(out, requires_grad=True)
    (jtu,) = torch.autograd.grad(out, x, u, create_graph=True)
    jt = _backward(jtu, u, tangents)
    return (jt.T if tangents.dim() == 2 else jt).detach()


def per_example_grads(
    losses: LossesFn, at: Tensor, x: Tensor, y: Tensor, chunk: int = 64
) -> Tensor:
    """Gradients ``d loss(z_i)/dparams`` of every example, shape ``[B, p]``.

    Batched by :func:`torch.func.vmap` over :func:`torch.func.grad`, ``chunk`` examples at a
    time, never one backward pass per example.
    """

    def one(p: Tensor, xi: Tensor, yi: Tensor) -> Tensor:
        return losses(p, xi.unsqueeze(0), yi.unsqueeze(0)).squeeze(0)

    per_example = vmap(grad(one), in_dims=(None, 0, 0), chunk_size=chunk)
    return per_example(at.detach(), x, y).detach()
