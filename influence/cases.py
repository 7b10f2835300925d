"""How finetuning treated the embedding: everything Algorithm 1 does differently per case.

The paper's two setups differ in what finetuning optimized, and so in three places only:

- which Hessian line 2 inverts (over Theta alone, or over (W, Theta) with the proximity term);
- which part of the test gradient it is applied to;
- how line 3 carries v1 back to the embedding W (the mixed block of eq. 11, or ``-2 alpha``
  of eq. 15).

Each case is one class here, so a third setup (a partly frozen embedding, say) is one more
subclass of :class:`Case`, not a hunt through the code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from . import checks
from .autodiff import DataHessian, call, data_mean, mixed_vjp
from .examples import Examples

if TYPE_CHECKING:
    from .multistage import MultiStage


class Case(ABC):
    """One way finetuning can use the pretrained embedding."""

    name: ClassVar[str]

    def __init__(
        self, embedding: nn.Module, pretrained_embedding: nn.Module | None, alpha: float
    ) -> None:
        self.pretrained_embedding = self._pretrained(
            embedding, pretrained_embedding, alpha
        )

    @abstractmethod
    def _pretrained(
        self, embedding: nn.Module, pretrained: nn.Module | None, alpha: float
    ) -> nn.Module:
        """Check the arguments this case needs; return the module holding W_bar."""

    @abstractmethod
    def finetune_hessian(self, ms: MultiStage, finetune: Examples) -> DataHessian:
        """The Hessian that line 2 of Algorithm 1 inverts."""

    @abstractmethod
    def first_rhs(self, ms: MultiStage, test_grad: Tensor) -> Tensor:
        """The part of ``df(x_t)/d(W, Theta)`` that line 2 solves against."""

    @abstractmethod
    def pullback(
        self, ms: MultiStage, v1: Tensor, test_grad: Tensor, finetune: Examples
    ) -> Tensor:
        """Line 3 over W only (the caller pads zeros over U)."""

    def finetune_gradient(self, ms: MultiStage, finetune_hessian: DataHessian) -> Tensor:
        """The gradient of the finetuning objective at the supplied optimum: 0 at a stationary point."""
        return finetune_hessian.loss_gradient() + ms.finetune_l2 * finetune_hessian.at


class EmbeddingFixed(Case):
    """Case 1 (Theorem 1, Algorithm 1): W frozen in finetuning, so W* = W_bar and F is minimized over Theta."""

    name = "fixed"

    def _pretrained(
        self, embedding: nn.Module, pretrained: nn.Module | None, alpha: float
    ) -> nn.Module:
        if pretrained is not None:
            raise ValueError(
                "pretrained_embedding: only used with case='updated'; in case 'fixed' W* = W_bar"
            )
        return embedding

    def finetune_hessian(self, ms: MultiStage, finetune: Examples) -> DataHessian:
        """``d2F/dTheta2`` at (W_bar, Theta*), plus ``finetune_l2``."""
        return DataHessian(
            ms._head_losses, ms.theta_star, _features(ms, finetune), ms.finetune_l2
        )

    def first_rhs(self, ms: MultiStage, test_grad: Tensor) -> Tensor:
        """``df/dTheta``: line 2 of Algorithm 1 inverts the Theta block alone."""
        return test_grad[..., ms.W.numel :]

    def pullback(
        self, ms: MultiStage, v1: Tensor, test_grad: Tensor, finetune: Examples
    ) -> Tensor:
        """``(d2F/dTheta dW)^T v1 - df/dW``: the bracket of eq. 11, transposed."""

        def mean_f(theta: Tensor, w: Tensor, x: Tensor, y: Tensor) -> Tensor:
            return ms.finetune_losses(torch.cat([w, theta]), x, y).mean()

        mixed = data_mean(
            lambda x, y: mixed_vjp(
                lambda t, w: mean_f(t, w, x, y), ms.theta_star, ms.w_star, v1
            ),
            finetune,
            like=ms.w_star.expand(*v1.shape[:-1], -1),
        )
        return mixed - test_grad[..., : ms.W.numel]


class EmbeddingUpdated(Case):
    """Case 2 (eqs. 12-15): finetuning minimized ``F + alpha ||W - W_bar||^2`` over (W, Theta)."""

    name = "updated"

    def __init__(
        self, embedding: nn.Module, pretrained_embedding: nn.Module | None, alpha: float
    ) -> None:
        self.alpha = alpha
        super().__init__(embedding, pretrained_embedding, alpha)

    def _pretrained(
        self, embedding: nn.Module, pretrained: nn.Module | None, alpha: float
    ) -> nn.Module:
        if pretrained is None:
            raise ValueError(
                "pretrained_embedding: case 'updated' needs the embedding as pretraining left it (W_bar)"
            )
        if alpha == 0:
            raise ValueError(
                "alpha: case 'updated' needs alpha > 0; with alpha = 0 pretraining has no influence (eq. 15)"
            )
        return checks.module(pretrained, "pretrained_embedding")

    def finetune_hessian(self, ms: MultiStage, finetune: Examples) -> DataHessian:
        """K: the Hessian over (W, Theta) of ``F + alpha ||W - W_bar||^2``, whose W-block carries ``+2 alpha I``."""
        diagonal = torch.full_like(ms.finetune_point, ms.finetune_l2)
        diagonal[: ms.W.numel] += 2 * self.alpha
        return DataHessian(
            ms.finetune_losses, ms.finetune_point, lambda: iter(finetune), diagonal
        )

    def first_rhs(self, ms: MultiStage, test_grad: Tensor) -> Tensor:
        """``df/d(W, Theta)``: eq. 15 solves with K over both blocks."""
        return test_grad

    def pullback(
        self, ms: MultiStage, v1: Tensor, test_grad: Tensor, finetune: Examples
    ) -> Tensor:
        """``-2 alpha [v1]_W`` (eq. 15)."""
        return -2 * self.alpha * v1[..., : ms.W.numel]

    def finetune_gradient(self, ms: MultiStage, finetune_hessian: DataHessian) -> Tensor:
        """The gradient of ``F + alpha ||W - W_bar||^2``: the proximity term pulls W toward W_bar."""
        grad = super().finetune_gradient(ms, finetune_hessian)
        grad[: ms.W.numel] += 2 * self.alpha * (ms.w_star - ms.w_bar)
        return grad


CASES: dict[str, type[Case]] = {c.name: c for c in (EmbeddingFixed, EmbeddingUpdated)}


def _features(
    ms: MultiStage, finetune: Examples
) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
    """Case 1 differentiates F in Theta alone, so the embedding's outputs are constants.

    They are computed once and kept while they fit in ``ms.feature_cache_bytes``; beyond that
    they are recomputed batch by batch at every product, and memory stays bounded.
    """

    def compute() -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in finetune:
            with torch.no_grad(), ms._evaluating():
                features = call(ms.embedding, ms.W, ms.w_star, x)
            yield features, y

    first = next(compute(), None)
    if first is None:  # a rank whose block of the finetuning data is empty
        return lambda: iter(())
    features = first[0]
    if (
        features[0].numel() * features.element_size() * len(finetune)
        > ms.feature_cache_bytes
    ):
        return compute
    cached = list(compute())
    return lambda: iter(cached)
