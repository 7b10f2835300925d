"""Multi-stage influence: how a pretraining example z moves a finetuned model's test loss.

The model has three parameter blocks (section 3.1 of the paper):

- W, the embedding, shared by both stages;
- U, the pretraining head;
- Theta, the finetuning head.

Pretraining minimizes ``G(W, U) = mean_z g(z) + pretrain_l2/2 ||(W, U)||^2`` (eq. 1), and
finetuning minimizes ``F = mean_x f(x) + finetune_l2/2 ||.||^2`` over Theta with W fixed
(Case 1, eq. 2) or over (W, Theta) near the pretrained W_bar (Case 2, eq. 12).

:meth:`MultiStage.scores` computes ``I_{z, x_t}`` (eq. 6) for many z at once, following
Algorithm 1 line by line:

1. the test gradients ``df(x_t)/dTheta`` and ``df(x_t)/dW``;
2. ``v1``, the first inverse-Hessian-vector product (finetuning Hessian);
3. ``u``, the vector that carries v1 back to the embedding, padded with zeros over U;
4. ``v2 = H_G^-1 u``, the second inverse-Hessian-vector product (pretraining Hessian);
5. ``score(z) = v2 . dg(z)/d(W, U)``, for all candidates z by one Jacobian-vector product.

Each step is also a public method, so the book can check it against dense algebra.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import checks, distributed
from .autodiff import (
    DataHessian,
    ParamSpace,
    call,
    gradient,
    jvp_losses,
    per_example_grads,
)
from .cases import CASES, Case
from .examples import Examples
from .losses import Loss, cross_entropy, precise
from .progress import progress
from .scores_file import ScoresFile
from .solvers import CG, SolveInfo, Solver

#: The solvers :meth:`MultiStage.scores` uses where none is given, Appendix B's MNIST settings:
#: eq. 16 (damping added to H^2) with damping 1e-2 for H_G and 1e-8 for the finetuning Hessian.
#: This is the one place these defaults are set. A bare ``CG()`` has damping 0: a solver made
#: by hand states its own regularizer.
DEFAULT_PRETRAIN_SOLVER = CG(damping=1e-2, iters=200, operator="H2")
#: The default for the finetuning Hessian, eq. 16 with damping 1e-8 (Appendix B, MNIST).
DEFAULT_FINETUNE_SOLVER = CG(damping=1e-8, iters=200, operator="H2")


@dataclass
class Report:
    """What the last :meth:`MultiStage.scores` call did: the two solves and the stationarity checks."""

    finetune_solves: list[SolveInfo] = field(default_factory=list)
    pretrain_solves: list[SolveInfo] = field(default_factory=list)
    pretrain_gradient_norm: float = math.nan  # ||dG/d(W, U)|| at (W_bar, U)
    finetune_gradient_norm: float = (
        math.nan
    )  # ||dF/dTheta|| (Case 1) or ||d(F + alpha..)/d(W, Theta)|| (Case 2)
    pretrain_solver: dict[str, object] = field(default_factory=dict)
    finetune_solver: dict[str, object] = field(default_factory=dict)
    # candidates this process scored, once per block of test points; a resumed run skips
    # the rows already written
    scored_rows: int = 0
    communication_bytes: int = (
        0  # payload this rank sent to collectives; 0 in one process
    )

    def stages(self) -> dict[str, dict[str, object]]:
        """Per stage: the solver, its damping and the operator it was added to, and how its
        solves ended (worst residual, whether all converged, whether any saw a system that was
        not positive definite). What a results file records."""

        def ended(solves: list[SolveInfo]) -> dict[str, object]:
            residuals = [
                s.relative_residual for s in solves if s.relative_residual is not None
            ]
            return {
                "solves": len(solves),
                "worst_relative_residual": max(residuals) if residuals else None,
                "converged": all(s.converged for s in solves),
                "positive_definite": all(
                    s.positive_definite is not False for s in solves
                ),
            }

        return {
            "pretrain": {**self.pretrain_solver, **ended(self.pretrain_solves)},
            "finetune": {**self.finetune_solver, **ended(self.finetune_solves)},
        }


def _check_loss(loss: Any, name: str) -> Loss:
    if loss is None:
        return cross_entropy
    if not callable(loss):
        raise TypeError(
            f"{name}: expected a callable (outputs, targets) -> per-example losses, or None"
        )
    return loss


class MultiStage:
    """Influence of pretraining examples on a finetuned model's test loss (Theorem 1, eqs. 12-15).

    The three modules are the parameter blocks W (``embedding``), U (``pretrain_head``) and
    Theta (``finetune_head``), at the optima the two stages reached. Pretraining outputs are
    ``pretrain_head(W_bar-embedding(x))`` and finetuning outputs ``finetune_head(embedding(x))``.

    ``case="fixed"`` is Case 1: W was frozen in finetuning, so the embedding holds W_bar.
    ``case="updated"`` is Case 2: the embedding holds the finetuned W*, ``pretrained_embedding``
    holds W_bar, and finetuning is modelled as minimizing ``F + alpha ||W - W_bar||^2`` (eq. 12).

    Losses are per-example callables ``(outputs, targets) -> [B]`` (default: cross-entropy).
    The L2 coefficients belong to the objectives G and F, hence to their Hessians, but not to
    g(z) or f(x_t). The modules are not modified; they are put in eval mode while scoring.
    """

    stationarity_tol: float = (
        1e-3  # warn when ||dG|| or ||dF|| at the supplied optimum exceeds this
    )
    feature_cache_bytes: int = (
        2**29
    )  # Case 1 keeps the embedding's outputs on the finetuning data up to this size

    def __init__(
        self,
        embedding: nn.Module,
        pretrain_head: nn.Module,
        finetune_head: nn.Module,
        *,
        pretrain_loss: Loss | None = None,
        finetune_loss: Loss | None = None,
        pretrain_l2: float = 0.0,
        finetune_l2: float = 0.0,
        case: str = "fixed",
        alpha: float = 0.01,
        pretrained_embedding: nn.Module | None = None,
    ) -> None:
        self.embedding = checks.module(embedding, "embedding")
        self.pretrain_head = checks.module(pretrain_head, "pretrain_head")
        self.finetune_head = checks.module(finetune_head, "finetune_head")
        self.pretrain_loss = _check_loss(pretrain_loss, "pretrain_loss")
        self.finetune_loss = _check_loss(finetune_loss, "finetune_loss")
        self._g, self._f = (
            precise(self.pretrain_loss),
            precise(self.finetune_loss),
        )  # float64: see influence.losses
        self.pretrain_l2 = checks.nonnegative(pretrain_l2, "pretrain_l2")
        self.finetune_l2 = checks.nonnegative(finetune_l2, "finetune_l2")
        if case not in CASES:
            raise ValueError(f"case: expected one of {sorted(CASES)}, got {case!r}")
        self.case = case
        self.alpha = checks.nonnegative(alpha, "alpha")
        self.setup: Case = CASES[case](
            embedding, pretrained_embedding, self.alpha
        )  # all that differs per case
        self.pretrained_embedding = self.setup.pretrained_embedding

        self.W = ParamSpace.of(embedding)
        self.U = ParamSpace.of(pretrain_head)
        self.Theta = ParamSpace.of(finetune_head)
        if ParamSpace.of(self.pretrained_embedding) != self.W:
            raise ValueError(
                "pretrained_embedding: its parameters must have the same names and shapes as embedding's"
            )
        modules = {
            "embedding": embedding,
            "pretrain_head": pretrain_head,
            "finetune_head": finetune_head,
        }
        if self.pretrained_embedding is not embedding:
            modules["pretrained_embedding"] = self.pretrained_embedding
        placements = {
            n: {(p.device, p.dtype) for p in m.parameters()} for n, m in modules.items()
        }
        if len(set().union(*placements.values())) != 1:
            found = ", ".join(
                f"{n}: {sorted(f'{d}/{t}' for d, t in s)}" for n, s in placements.items()
            )
            raise ValueError(f"modules must share one device and dtype; found {found}")
        ((self.device, self.dtype),) = set().union(*placements.values())

        self.w_bar = self.W.flatten(
            self.pretrained_embedding
        )  # W_bar: the pretrained embedding
        self.u_bar = self.U.flatten(pretrain_head)  # U* (U_bar in Case 2)
        self.w_star = self.W.flatten(embedding)  # W*: = W_bar in Case 1
        self.theta_star = self.Theta.flatten(finetune_head)
        self.report = Report()

    # ---- the two losses as functions of flat parameter vectors -------------------------------

    @property
    def pretrain_point(self) -> Tensor:
        """The point where G and its Hessian are evaluated: (W_bar, U*) as one flat vector."""
        return torch.cat([self.w_bar, self.u_bar])

    @property
    def finetune_point(self) -> Tensor:
        """The point where F, f and their derivatives are evaluated: (W*, Theta*) as one flat vector."""
        return torch.cat([self.w_star, self.theta_star])

    def pretrain_losses(self, wu: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Per-example pretraining losses g(z; W, U) with (W, U) given as one flat vector."""
        w, u = wu[..., : self.W.numel], wu[..., self.W.numel :]
        features = call(self.pretrained_embedding, self.W, w, x)
        return self._g(call(self.pretrain_head, self.U, u, features), y)

    def finetune_losses(self, wt: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Per-example finetuning losses f(x; W, Theta) with (W, Theta) given as one flat vector."""
        w, theta = wt[..., : self.W.numel], wt[..., self.W.numel :]
        return self._f(
            call(
                self.finetune_head, self.Theta, theta, call(self.embedding, self.W, w, x)
            ),
            y,
        )

    def _head_losses(self, theta: Tensor, features: Tensor, y: Tensor) -> Tensor:
        return self._f(call(self.finetune_head, self.Theta, theta, features), y)

    # ---- Algorithm 1, one method a line ---------------------------------------------------------

    def test_gradient(
        self, test: Any, *, per_test: bool = False, batch_size: int = 256
    ) -> Tensor:
        """Line 1: ``df(x_t)/d(W, Theta)`` at (W*, Theta*), as one flat vector over (W, Theta).

        Summed over the test points (eq. 8) by default; with ``per_test=True`` one row per test
        point, ``[n_test, p_W + p_Theta]``, by batched per-example gradients.
        """
        test = self._examples(test, "test", batch_size)
        with self._evaluating():
            if per_test:
                return torch.cat(
                    [
                        per_example_grads(self.finetune_losses, self.finetune_point, x, y)
                        for x, y in test
                    ]
                )
            parts = [
                gradient(
                    lambda p: self.finetune_losses(p, x, y).sum(), self.finetune_point
                )
                for x, y in test
            ]
            return torch.stack(parts).sum(0)

    def finetune_hessian(self, finetune: Any, *, batch_size: int = 256) -> DataHessian:
        """The Hessian that line 2 inverts.

        Case 1: ``d2F/dTheta2`` at (W_bar, Theta*), plus ``finetune_l2``.
        Case 2: K, the Hessian over (W, Theta) of ``F + alpha ||W - W_bar||^2`` at (W*, Theta*),
        whose W-block carries ``+2 alpha I`` (eq. 15).
        """
        return self.setup.finetune_hessian(
            self, self._examples(finetune, "finetune", batch_size)
        )

    def pretrain_hessian(self, pretrain: Any, *, batch_size: int = 256) -> DataHessian:
        """``H_G = d2G/d(W, U)2`` at (W_bar, U*), plus ``pretrain_l2``: the Hessian that line 4 inverts."""
        pretrain = self._examples(pretrain, "pretrain", batch_size)
        return DataHessian(
            self.pretrain_losses,
            self.pretrain_point,
            lambda: iter(pretrain),
            self.pretrain_l2,
        )

    def first_ihvp(
        self, test_grad: Tensor, finetune_hessian: DataHessian, solver: Solver
    ) -> Tensor:
        """Line 2: ``v1``, the first inverse-Hessian-vector product.

        Over Theta in Case 1, ``(d2F/dTheta2)^-1 df/dTheta``; over (W, Theta) in Case 2,
        ``K^-1 df/d(W,Theta)``.
        """
        rhs = self.setup.first_rhs(self, test_grad)
        with self._evaluating():
            v1, info = solver.solve(finetune_hessian, rhs)
        self.report.finetune_solves.append(info)
        return v1

    def pullback(
        self, v1: Tensor, test_grad: Tensor, finetune: Any, *, batch_size: int = 256
    ) -> Tensor:
        """Line 3: ``u``, over (W, U).

        Case 1: ``u = (d2F/dTheta dW)^T v1 - df/dW`` (the bracket of eq. 11, transposed), by a
        mixed second-derivative product streamed over the finetuning data.
        Case 2: ``u = -2 alpha [v1]_W`` (eq. 15).
        Either way u is padded with zeros over U, since G's perturbation only reaches the
        finetuned model through W.
        """
        finetune = self._examples(finetune, "finetune", batch_size)
        with self._evaluating():
            u_w = self.setup.pullback(self, v1, test_grad, finetune)
        return torch.cat([u_w, u_w.new_zeros(*u_w.shape[:-1], self.U.numel)], dim=-1)

    def second_ihvp(
        self, u: Tensor, pretrain_hessian: DataHessian, solver: Solver
    ) -> Tensor:
        """Line 4: ``v2 = H_G^-1 u`` at (W_bar, U*), the influence vector shared by all candidates."""
        with self._evaluating():
            v2, info = solver.solve(pretrain_hessian, u)
        self.report.pretrain_solves.append(info)
        return v2

    def score_candidates(
        self, candidates: Any, v2: Tensor, *, batch_size: int = 256
    ) -> Tensor:
        """Line 5: ``score(z) = v2 . dg(z)/d(W, U)`` for every candidate z.

        One Jacobian-vector product of the per-example losses along v2 a batch, never a
        backward pass per candidate. ``v2`` of shape ``[k, p]`` gives scores ``[n, k]``.
        """
        candidates = self._examples(candidates, "candidates", batch_size, ordered=True)
        at = self.pretrain_point
        out = []
        with self._evaluating():
            for x, y in progress(
                candidates, desc="scoring", total=candidates.num_batches
            ):
                out.append(jvp_losses(lambda p: self.pretrain_losses(p, x, y), at, v2))
        return torch.cat(out).to(self.dtype)

    def candidate_gradients(self, candidates: Any, *, batch_size: int = 256) -> Tensor:
        """``dg(z)/d(W, U)`` for every candidate, ``[n, p_W + p_U]``: for teaching and checks.

        Scoring does not need these (see :meth:`score_candidates`); they cost ``n * p`` memory.
        """
        candidates = self._examples(candidates, "candidates", batch_size, ordered=True)
        with self._evaluating():
            return torch.cat(
                [
                    per_example_grads(self.pretrain_losses, self.pretrain_point, x, y)
                    for x, y in candidates
                ]
            )

    # ---- the whole score ---------------------------------------------------------------------

    def scores(
        self,
        pretrain: Any,
        finetune: Any,
        test: Any,
        candidates: Any = None,
        pretrain_solver: Solver | None = None,
        finetune_solver: Solver | None = None,
        per_test: bool = False,
        *,
        batch_size: int = 256,
        test_block: int = 32,
        gather: str = "all",
        scores_file: str | os.PathLike | None = None,
        timeout: float = distributed.DEFAULT_TIMEOUT,
    ) -> Tensor | None:
        """Influence scores ``I_{z, x_t}`` (eq. 6; summed over test points, eq. 8).

        ``pretrain`` defines G and H_G, ``finetune`` defines F and its Hessians, ``test`` holds
        the finetuning test points x_t, and ``candidates`` (default: ``pretrain``) are the
        pretraining examples scored. Each is a pair of tensors ``(x, y)`` or a DataLoader.

        Returns ``[n_candidates]`` summed over the test points, or with ``per_test=True``
        ``[n_candidates, n_test]``, solved ``test_block`` test points at a time.
        Removing z_i from m pretraining examples changes the summed test loss by about
        ``-scores[i] / m``; a positive score marks a harmful example.
        ``batch_size`` bounds the examples held at once when tensors are passed.
        The solvers default to :data:`DEFAULT_PRETRAIN_SOLVER` for H_G and
        :data:`DEFAULT_FINETUNE_SOLVER` for the finetuning Hessian (eq. 16, Appendix B's MNIST
        dampings 1e-2 and 1e-8); ``report`` records which were used.

        Under ``torchrun`` (an initialized process group of several ranks; see
        :mod:`influence.distributed`) every rank makes this same call. The solves run once,
        their Hessian-vector products streamed over each rank's block of ``pretrain`` and
        ``finetune`` and summed by all-reduce; the candidates are scored in contiguous blocks,
        one a rank, and gathered in candidate order to every rank (``gather="all"``) or to
        rank 0 alone (``gather="rank0"``: the other ranks return None). A rank that fails
        makes every rank raise :class:`~influence.distributed.RankFailed` with its message;
        a rank that vanishes ends the others' waits after ``timeout`` seconds.

        ``scores_file`` names a resumable ``.npy`` file (:mod:`influence.scores_file`): each
        scored row is written there by its index with a 'written' flag, and a rerun scores
        only the rows not yet written.
        """
        pretrain_solver = (
            DEFAULT_PRETRAIN_SOLVER if pretrain_solver is None else pretrain_solver
        )
        finetune_solver = (
            DEFAULT_FINETUNE_SOLVER if finetune_solver is None else finetune_solver
        )
        for name, solver in (
            ("pretrain_solver", pretrain_solver),
            ("finetune_solver", finetune_solver),
        ):
            if not isinstance(solver, Solver):
                raise TypeError(
                    f"{name}: expected an influence solver (Exact, CG or Identity), got {type(solver).__name__}"
                )
        checks.flag(per_test, "per_test")
        checks.positive_int(batch_size, "batch_size")
        checks.positive_int(test_block, "test_block")
        if gather not in ("all", "rank0"):
            raise ValueError(f"gather: expected 'all' or 'rank0', got {gather!r}")
        group = distributed.detect(self.device, timeout)
        with distributed.activated(group):
            return self._scores(
                group,
                pretrain,
                finetune,
                test,
                candidates,
                pretrain_solver,
                finetune_solver,
                per_test,
                batch_size=batch_size,
                test_block=test_block,
                gather=gather,
                scores_file=scores_file,
            )

    def _scores(
        self,
        group: distributed.Group | None,
        pretrain: Any,
        finetune: Any,
        test: Any,
        candidates: Any,
        pretrain_solver: Solver,
        finetune_solver: Solver,
        per_test: bool,
        *,
        batch_size: int,
        test_block: int,
        gather: str,
        scores_file: str | os.PathLike | None,
    ) -> Tensor | None:
        """:meth:`scores` in one process (``group`` None) or as one rank of ``group``."""
        together = group.together if group is not None else contextlib.nullcontext
        rank, world = (0, 1) if group is None else (group.rank, group.world)
        sent = 0 if group is None else group.bytes_sent
        with together():  # every rank checks its inputs; any failure stops all of them
            if (
                candidates is None
            ):  # the pretraining examples are scored: their order holds
                candidates = self._examples(
                    pretrain, "pretrain", batch_size, ordered=True
                )
            else:
                candidates = self._examples(
                    candidates, "candidates", batch_size, ordered=True
                )
            pretrain = self._examples(pretrain, "pretrain", batch_size)
            finetune = self._examples(finetune, "finetune", batch_size)
            test = self._examples(test, "test", batch_size)
            if group is not None:  # each rank's share of the sums behind the Hessians
                pretrain = pretrain.rows(distributed.shard(len(pretrain), rank, world))
                finetune = finetune.rows(distributed.shard(len(finetune), rank, world))
            n = len(candidates)
            mine = distributed.shard(n, rank, world)
            n_test = len(test) if per_test else None
            if scores_file is not None and rank == 0:
                ScoresFile.create(scores_file, n, n_test)
        file = None
        if scores_file is not None:
            with together():  # after rank 0 made the file
                file = ScoresFile(scores_file, n, n_test)
        self.report = Report(
            pretrain_solver=pretrain_solver.describe(),
            finetune_solver=finetune_solver.describe(),
        )
        if file is not None and bool(file.written.all()):
            finished = file.scores()  # a finished run: nothing to solve or score
            return finished if gather == "all" or rank == 0 else None
        h_f = self.finetune_hessian(finetune)
        h_g = self.pretrain_hessian(pretrain)
        self._check_stationary(h_g, h_f)

        def v2_for(grad_f: Tensor) -> Tensor:
            v1 = self.first_ihvp(grad_f, h_f, finetune_solver)
            u = self.pullback(v1, grad_f, finetune)
            return self.second_ihvp(u, h_g, pretrain_solver)

        mine_candidates = candidates.rows(mine) if group is not None else candidates
        if not per_test:
            v2 = v2_for(self.test_gradient(test))
            with together():
                local = self._score_rows(mine_candidates, mine, v2, file, None)
        else:
            columns, done = [], 0
            for x, y in test.blocks(test_block):
                v2 = v2_for(self.test_gradient((x, y), per_test=True))
                with together():
                    columns.append(
                        self._score_rows(mine_candidates, mine, v2, file, (done, len(y)))
                    )
                done += len(y)
            local = torch.cat(columns, dim=1)
        if group is None:
            return local
        if file is not None:
            with together():  # every rank's rows are in the file
                pass
            out = file.scores() if gather == "all" or rank == 0 else None
        else:
            out = group.gather_rows(local, n, to_all=gather == "all")
        self.report.communication_bytes = group.bytes_sent - sent
        return out

    def _score_rows(
        self,
        candidates: Examples,
        rows: range,
        v2: Tensor,
        file: ScoresFile | None,
        columns: tuple[int, int] | None,
    ) -> Tensor:
        """Score the candidates at global indices ``rows`` along v2, skipping rows already in ``file``.

        ``columns`` (per_test only) is the block ``(first test point, count)`` that v2 holds;
        a row counts as written once its last block is in, so this block is recomputed
        unless the file already holds the whole row.
        """
        width = () if v2.dim() == 1 else (v2.shape[0],)
        out = torch.zeros(len(rows), *width, dtype=self.dtype, device=self.device)
        if not len(rows):  # a rank with no candidates
            return out
        at, start = self.pretrain_point, 0
        written = file.written[rows.start : rows.stop] if file is not None else None
        with self._evaluating():
            for x, y in progress(
                candidates, desc="scoring", total=candidates.num_batches
            ):
                block = slice(start, start + len(y))
                start += len(y)
                if written is not None and bool(written[block].all()):
                    held = file.rows[rows.start + block.start : rows.start + block.stop]
                    first, count = (0, 1) if columns is None else columns
                    held = held[:, 1 + first : 1 + first + count]
                    out[block] = (held[:, 0] if columns is None else held).to(out)
                    continue
                scores = jvp_losses(lambda p: self.pretrain_losses(p, x, y), at, v2)
                out[block] = scores.to(self.dtype)
                self.report.scored_rows += len(y)
                if file is not None:
                    self._write(file, rows.start + block.start, scores, columns)
        return out

    @staticmethod
    def _write(
        file: ScoresFile, start: int, scores: Tensor, columns: tuple[int, int] | None
    ) -> None:
        """Put a batch's scores into the file; per test block, flag the row after its last block."""
        if columns is None:
            file.write(start, scores)
            return
        first, count = columns
        rows = file.rows[start : start + len(scores)]
        rows[:, 1 + first : 1 + first + count] = scores.detach().to("cpu", torch.float64)
        if first + count == file.n_test:
            rows[:, 0] = 1.0

    # ---- checks ----------------------------------------------------------------------------------

    def _examples(
        self, data: Any, name: str, batch_size: int, ordered: bool = False
    ) -> Examples:
        if isinstance(data, Examples):
            return data
        examples = Examples(
            data,
            name,
            device=self.device,
            dtype=self.dtype,
            batch_size=batch_size,
            ordered=ordered,
        )
        self._check_fits(examples)
        return examples

    def _check_fits(self, examples: Examples) -> None:
        """Run the first batch through the stage it belongs to, and name the argument if it fails."""
        x, y = next(iter(examples.blocks(2)))
        pretraining = examples.name in ("pretrain", "candidates")
        losses_fn, at = (
            (self.pretrain_losses, self.pretrain_point)
            if pretraining
            else (self.finetune_losses, self.finetune_point)
        )
        loss_name = "pretrain_loss" if pretraining else "finetune_loss"
        try:
            with torch.no_grad(), self._evaluating():
                losses = losses_fn(at, x, y)
        except (RuntimeError, IndexError, ValueError) as error:
            raise ValueError(
                f"{examples.name}: the {'pretraining' if pretraining else 'finetuning'} model cannot take "
                f"x of shape {tuple(x.shape)} with y of shape {tuple(y.shape)}: {error}"
            ) from error
        if not isinstance(losses, torch.Tensor) or losses.shape != (len(y),):
            shape = (
                tuple(losses.shape)
                if isinstance(losses, torch.Tensor)
                else type(losses).__name__
            )
            raise ValueError(
                f"{loss_name}: expected per-example losses of shape [{len(y)}], got {shape}"
            )

    def _check_stationary(self, h_g: DataHessian, h_f: DataHessian) -> None:
        """Warn when the supplied optimum is visibly not stationary: the theory assumes dG = dF = 0."""
        with self._evaluating():
            g_grad = h_g.loss_gradient() + self.pretrain_l2 * h_g.at
            f_grad = self.setup.finetune_gradient(self, h_f)
        self.report.pretrain_gradient_norm = g_grad.norm().item()
        self.report.finetune_gradient_norm = f_grad.norm().item()
        for stage, norm in (
            ("pretraining objective G", self.report.pretrain_gradient_norm),
            ("finetuning objective F", self.report.finetune_gradient_norm),
        ):
            if norm > self.stationarity_tol:
                warnings.warn(
                    f"the {stage} has gradient norm {norm:.3g} at the supplied parameters "
                    f"(warning above {self.stationarity_tol:g}); the influence function assumes a stationary "
                    f"point, so train closer to convergence or expect less accurate scores",
                    RuntimeWarning,
                    stacklevel=3,
                )

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        modules = [
            self.embedding,
            self.pretrain_head,
            self.finetune_head,
            self.pretrained_embedding,
        ]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            yield
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
