"""EK-FAC (George et al. 2018, as Grosse et al. 2023 use it for influence) through kronfluence,
as an inverse Hessian for Theorem 1's pretraining solve.

kronfluence fits the factors: per layer, the eigenbases of the input and output-gradient
covariances, and the eigenvalues re-fitted in that basis. Its scores precondition *query
gradients*; Theorem 1 needs ``H_G^-1 u`` for a vector ``u`` that is not the gradient of one
loss (Algorithm 1, line 4). A measurement ``phi -> u . phi`` has gradient ``u``, so
``grad g(z)^T (F_EKFAC + lambda I)^-1 u`` is the EK-FAC version of ``v2 . grad g(z)``.
kronfluence takes query gradients from layer hooks, not from autograd, so it cannot see such a
measurement; :meth:`EKFAC.precondition` hands ``u``, cut into kronfluence's per-layer layout,
to kronfluence's own EK-FAC preconditioner instead, which is the same linear map
(``tests/test_methods.py`` checks it against kronfluence's pairwise scores and against the dense
matrix of its factors).

kronfluence is an optional dependency (the ``experiments`` extra); the library never imports it.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn
from torch.utils.data import TensorDataset

Pair = tuple[Tensor, Tensor]


def _task():
    from kronfluence.task import Task

    class Classification(Task):
        """Cross-entropy, summed over a batch; with ``sample`` the labels are drawn from the
        model, so the factors estimate the Fisher (the Gauss-Newton Hessian), not the
        empirical Fisher."""

        def compute_train_loss(self, batch, model, sample=False):  # noqa: ANN001
            x, y = batch
            logits = model(x)
            if sample:
                with torch.no_grad():
                    probs = torch.softmax(logits.detach(), dim=-1)
                    y = torch.multinomial(probs, 1).squeeze(-1)
            return nnf.cross_entropy(logits, y, reduction="sum")

        def compute_measurement(self, batch, model):  # noqa: ANN001
            return self.compute_train_loss(batch, model)

    return Classification()


def _layout(module: nn.Module, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A layer's (weight, bias) in kronfluence's gradient layout: (out, in * k * k [+ 1])."""
    matrix = weight.reshape(weight.shape[0], -1)
    return matrix if bias is None else torch.cat([matrix, bias[:, None]], dim=1)


@dataclass
class EKFAC:
    """Fitted EK-FAC factors of ``model``'s training loss, damped by ``damping``.

    :meth:`precondition` applies ``(F_EKFAC + damping I)^-1`` to a vector laid out like
    ``torch.cat([p.flatten() for p in model.parameters()])``.
    """

    model: (
        nn.Module
    )  # kronfluence's prepared copy: its Linear and Conv2d layers are wrapped
    factors: dict
    damping: float

    def _storage(self) -> dict[str, dict]:
        from kronfluence.arguments import ScoreArguments
        from kronfluence.factor.config import Ekfac
        from kronfluence.module.tracked_module import TrackedModule

        args = ScoreArguments(
            damping_factor=self.damping, precondition_dtype=torch.float64
        )
        out = {}
        for name, module in self.model.named_modules():
            if isinstance(module, TrackedModule):
                storage = {
                    key: value[name].clone()
                    for key, value in self.factors.items()
                    if name in value
                }
                Ekfac().prepare(storage, args, torch.device("cpu"))
                out[name] = storage
        return out

    def precondition(self, vector: Tensor) -> Tensor:
        """``(F_EKFAC + damping I)^-1 vector``, by kronfluence's EK-FAC preconditioner per layer."""
        from kronfluence.factor.config import Ekfac
        from kronfluence.module.tracked_module import TrackedModule

        layers = [
            m.original_module
            for m in self.model.modules()
            if isinstance(m, TrackedModule)
        ]
        expected = sum(p.numel() for layer in layers for p in layer.parameters())
        if vector.dim() != 1 or vector.numel() != expected:
            raise ValueError(
                f"vector: expected {expected} entries (the model's parameters), "
                f"got shape {tuple(vector.shape)}"
            )
        storages, pieces, offset = self._storage(), [], 0
        for name, module in self.model.named_modules():
            if not isinstance(module, TrackedModule):
                continue
            layer = module.original_module
            weight = layer.weight
            bias = layer.bias
            sizes = [weight.numel()] + ([bias.numel()] if bias is not None else [])
            w = vector[offset : offset + sizes[0]].reshape(weight.shape)
            b = (
                vector[offset + sizes[0] : offset + sum(sizes)]
                if bias is not None
                else None
            )
            offset += sum(sizes)
            out = Ekfac().precondition_gradient(
                _layout(layer, w, b)[None].double(), storages[name]
            )[0]
            pieces.append(out[:, : w[0].numel()].reshape(-1))
            if bias is not None:
                pieces.append(out[:, -1])
        return torch.cat(pieces).to(vector.dtype)

    def dense(self) -> Tensor:
        """The matrix ``F_EKFAC`` itself (no damping), assembled from the factors: small models only."""
        from kronfluence.module.tracked_module import TrackedModule
        from kronfluence.utils.constants import (
            ACTIVATION_EIGENVECTORS_NAME,
            GRADIENT_EIGENVECTORS_NAME,
            LAMBDA_MATRIX_NAME,
            NUM_LAMBDA_PROCESSED,
        )

        blocks, perms = [], []
        for name, module in self.model.named_modules():
            if not isinstance(module, TrackedModule):
                continue
            qa = self.factors[ACTIVATION_EIGENVECTORS_NAME][name].double()
            qg = self.factors[GRADIENT_EIGENVECTORS_NAME][name].double()
            lam = self.factors[LAMBDA_MATRIX_NAME][name].double()
            lam = lam / self.factors[NUM_LAMBDA_PROCESSED][name].double()
            # vec(G) row-major of (out, in+1): G = Qg diag Qa^T -> kron(Qg, Qa) on vec
            basis = torch.kron(qg, qa)
            blocks.append(basis @ torch.diag(lam.reshape(-1)) @ basis.T)
            layer = module.original_module
            out_dim, cols = lam.shape
            index = torch.arange(out_dim * cols).reshape(out_dim, cols)
            order = [index[:, : cols - (layer.bias is not None)].reshape(-1)]
            if layer.bias is not None:
                order.append(index[:, -1])
            perms.append(torch.cat(order))
        dense = torch.block_diag(*blocks)
        offsets = torch.cumsum(torch.tensor([0] + [len(p) for p in perms[:-1]]), 0)
        perm = torch.cat([p + o for p, o in zip(perms, offsets, strict=True)])
        return dense[perm][:, perm]


def fit_ekfac(
    model: nn.Module,
    data: Pair,
    *,
    damping: float,
    batch_size: int = 500,
    seed: int = 0,
    workdir: str | Path | None = None,
) -> EKFAC:
    """kronfluence's EK-FAC factors of ``model`` on ``data``, in float64, for
    ``(F_EKFAC + damping I)^-1``. ``model`` is copied, so the caller's stays trainable;
    the factors are written under ``workdir`` (a temporary folder by default)."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments

    task = _task()
    prepared = prepare_model(copy.deepcopy(model), task)
    folder = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp())
    logging.getLogger("kronfluence").setLevel(logging.WARNING)
    analyzer = Analyzer(
        "ekfac",
        prepared,
        task,
        cpu=True,
        disable_tqdm=True,
        output_dir=str(folder),
        log_level=logging.WARNING,
    )
    f64 = torch.float64
    args = FactorArguments(
        strategy="ekfac",
        activation_covariance_dtype=f64,
        gradient_covariance_dtype=f64,
        eigendecomposition_dtype=f64,
        per_sample_gradient_dtype=f64,
        lambda_dtype=f64,
    )
    torch.manual_seed(seed)  # the labels the Fisher samples
    with warnings.catch_warnings():
        # kronfluence builds a disabled AMP GradScaler on the CPU, which torch warns about
        warnings.filterwarnings("ignore", message=".*GradScaler.*")
        analyzer.fit_all_factors(
            "factors",
            TensorDataset(*data),
            per_device_batch_size=batch_size,
            factor_args=args,
            overwrite_output_dir=True,
        )
    return EKFAC(prepared, analyzer.load_all_factors("factors"), damping)
