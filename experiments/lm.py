"""Section 4.5's models: a small ELMo-style bidirectional LSTM language model, the tweet classifier
on its frozen states, and a bag-of-words logistic-regression baseline.

The paper's pretrained model is ELMo (Peters et al., 2018): a character CNN feeding two LSTM
layers per direction, 93.6M parameters, trained on One Billion Word. Ours keeps ELMo's shape
and objective and shrinks everything else:

- words, not characters: a word embedding over a cut vocabulary stands in for the character
  CNN, which on 2 CPU cores would cost more than the rest of the model together;
- one LSTM layer per direction, a few dozen units instead of 4,096;
- one softmax layer shared by both directions (ELMo ties them too).

The paper's blocks (section 3.1) are:

- W, :class:`Encoder`: the token embedding and the two LSTMs;
- U, :class:`LMHead`: the softmax layer predicting the next token forwards and backwards;
- Theta, :class:`Classifier`: a feed-forward net with hidden size 64 on the mean of the
  encoder's forward and backward states over the tweet (the paper's "FFN with hidden size 64").

g(z), :func:`lm_losses`, is a sentence's mean token negative log-likelihood over both
directions. Sentences are padded LongTensors with ``<pad>`` = 0 at the end; every module
finds the padding from the ids, so a sentence's loss does not depend on how it is padded.
The LSTMs are written out in elementary operations (not ``nn.LSTM``) so that forward-mode
AD, ``vmap`` and double backprop all run through them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from influence.progress import progress

from .fit import Objective, fit_lbfgs
from .objectives import Plain, StageObjective
from .text import by_length, pad


def lengths(x: Tensor) -> Tensor:
    """Each row's number of non-padding ids (padding is id 0, at the end)."""
    return (x != 0).sum(-1)


def reverse_padded(h: Tensor, length: Tensor) -> Tensor:
    """Reverse each row's first ``length`` positions of ``h`` [B, T, ...], padding left in place.

    An involution: applied twice it gives ``h`` back. The backward LSTM reads the reversed
    rows, so padding comes after every real token in both directions.
    """
    t = torch.arange(h.shape[1], device=h.device)
    index = torch.where(
        t < length.unsqueeze(-1), length.unsqueeze(-1) - 1 - t, t
    )  # [B, T]
    index = index.reshape(*index.shape, *([1] * (h.dim() - 2))).expand_as(h)
    return torch.gather(h, 1, index)


class LSTM(nn.Module):
    """One LSTM layer over a batch of sequences [B, T, d] -> hidden states [B, T, H] (zero start)."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(hidden)
        self.weight_ih = nn.Parameter(
            torch.empty(4 * hidden, inputs).uniform_(-bound, bound)
        )
        self.weight_hh = nn.Parameter(
            torch.empty(4 * hidden, hidden).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.zeros(4 * hidden))
        self.hidden = hidden

    def forward(self, inputs: Tensor) -> Tensor:
        pre = inputs @ self.weight_ih.T + self.bias  # all input projections at once
        h = inputs.new_zeros(*inputs.shape[:-2], self.hidden)
        c = torch.zeros_like(h)
        states = []
        for t in range(inputs.shape[-2]):
            i, f, g, o = (pre[..., t, :] + h @ self.weight_hh.T).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            states.append(h)
        return torch.stack(states, dim=-2)


class Encoder(nn.Module):
    """W: token ids [B, T] -> ``[h_forward, h_backward, mask]`` [B, T, 2H + 1].

    ``h_forward[t]`` has read tokens 0..t, ``h_backward[t]`` tokens t..end of the row. The last
    channel is 1 on real tokens and 0 on padding, so the heads can mask without seeing x.
    """

    def __init__(self, vocab: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Parameter(torch.randn(vocab, dim) * 0.1)
        self.forward_lstm = LSTM(dim, hidden)
        self.backward_lstm = LSTM(dim, hidden)
        self.hidden = hidden

    def forward(self, x: Tensor) -> Tensor:
        length = lengths(x)
        e = self.embed[x]  # indexing, not nnf.embedding: forward-mode AD runs through it
        h_forward = self.forward_lstm(e)
        h_backward = reverse_padded(self.backward_lstm(reverse_padded(e, length)), length)
        mask = (x != 0).to(e.dtype).unsqueeze(-1)
        return torch.cat([h_forward, h_backward, mask], dim=-1)


class LMHead(nn.Module):
    """U: one softmax layer for both directions -> logits [B, T - 1, 2, V].

    Direction 0 predicts token t + 1 from ``h_forward[t]``; direction 1 predicts token t from
    ``h_backward[t + 1]``, so both line up with the targets ``x[:, 1:]`` and ``x[:, :-1]``.
    """

    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.softmax = nn.Linear(hidden, vocab)
        self.hidden = hidden

    def forward(self, features: Tensor) -> Tensor:
        h = self.hidden
        states = torch.stack([features[:, :-1, :h], features[:, 1:, h : 2 * h]], dim=2)
        return self.softmax(states)


def lm_losses(logits: Tensor, x: Tensor) -> Tensor:
    """g(z) for each sentence: mean negative log-likelihood of its tokens, forwards and backwards.

    ``x`` [B, T] is the padded sentence itself (``<s>`` w_1 ... w_n ``</s>``); the forward
    targets are ``x[:, 1:]``, the backward ``x[:, :-1]``, each counted where ``x[:, 1:]`` is
    not padding: n + 1 predictions a direction.
    """
    mask = (x[:, 1:] != 0).to(logits.dtype)  # [B, T-1]
    targets = torch.stack([x[:, 1:], x[:, :-1]], dim=2)  # [B, T-1, 2]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -(logp * mask.unsqueeze(-1)).sum((1, 2)) / (2 * mask.sum(1))


def mean_pool(features: Tensor) -> Tensor:
    """The mean of ``[h_forward, h_backward]`` over each row's real tokens: [B, 2H]."""
    mask = features[..., -1:]
    return (features[..., :-1] * mask).sum(-2) / mask.sum(-2)


class Classifier(nn.Module):
    """Theta: mean-pooled encoder states -> FFN with one tanh hidden layer -> 2 logits."""

    def __init__(self, hidden: int, width: int = 64, classes: int = 2) -> None:
        super().__init__()
        self.ffn = nn.Sequential(
            nn.Linear(2 * hidden, width), nn.Tanh(), nn.Linear(width, classes)
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.ffn(mean_pool(features))


@dataclass(frozen=True)
class LMSize:
    """The language model's size."""

    vocab: int  # words kept, plus the four specials
    dim: int  # token-embedding width
    hidden: int  # LSTM units per direction


def build_lm(size: LMSize, seed: int) -> tuple[Encoder, LMHead]:
    """A freshly initialized encoder (W) and softmax head (U)."""
    torch.manual_seed(seed)
    return Encoder(size.vocab, size.dim, size.hidden), LMHead(size.hidden, size.vocab)


def device_of(module: nn.Module) -> torch.device:
    """Where a module's parameters are: the batches padded for it are moved there."""
    return next(module.parameters()).device


def parameter_count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def length_batches(
    sequences: Sequence[Sequence[int]], batch_size: int
) -> list[list[int]]:
    """Batches of indices of similar length (sorted by length, then cut)."""
    order = by_length(sequences)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def train_lm(
    encoder: Encoder,
    head: LMHead,
    sequences: Sequence[Sequence[int]],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    clip: float = 1.0,
) -> list[float]:
    """Adam on the mean of g over the sentences, in length-bucketed minibatches drawn in a seeded order.

    Returns the minibatch loss of every step.
    """
    params = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    batches = length_batches(sequences, batch_size)
    generator = torch.Generator().manual_seed(seed)
    history = []
    encoder.train()
    head.train()
    steps = (
        (epoch, int(b))
        for epoch in range(epochs)
        for b in torch.randperm(len(batches), generator=generator)
    )
    for _, b in progress(steps, desc="pretraining", total=epochs * len(batches)):
        x = pad([sequences[i] for i in batches[b]]).to(device_of(encoder))
        loss = lm_losses(head(encoder(x)), x).mean()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        history.append(loss.item())
    return history


@torch.no_grad()
def perplexity(
    encoder: Encoder,
    head: LMHead,
    sequences: Sequence[Sequence[int]],
    batch_size: int = 128,
) -> float:
    """exp of the mean token negative log-likelihood over both directions (each token weighted once)."""
    total, count = 0.0, 0
    for batch in length_batches(sequences, batch_size):
        x = pad([sequences[i] for i in batch]).to(device_of(encoder))
        tokens = lengths(x) - 1  # predictions a direction
        total += float((lm_losses(head(encoder(x)), x) * tokens).sum())
        count += int(tokens.sum())
    return math.exp(total / count)


@torch.no_grad()
def pooled_features(
    encoder: Encoder, sequences: Sequence[Sequence[int]], batch_size: int = 256
) -> Tensor:
    """:func:`mean_pool` of the encoder's states for every sequence, in the given order: [n, 2H]."""
    device = device_of(encoder)
    out = torch.empty(len(sequences), 2 * encoder.hidden, device=device)
    for batch in length_batches(sequences, batch_size):
        out[batch] = mean_pool(encoder(pad([sequences[i] for i in batch]).to(device)))
    return out


def fit_full_batch(
    objective: Objective, *, tol: float = 1e-6, max_iter: int = 2000
) -> float:
    """:func:`~experiments.fit.fit_lbfgs` as section 4.5 runs it: one L-BFGS run, a memory of 50
    steps, no restarts. Returns the final gradient norm."""
    return fit_lbfgs(objective, tol=tol, max_iter=max_iter, restarts=1, history_size=50)


def train_classifier(
    head: Classifier, pooled: Tensor, labels: Tensor, *, l2: float, tol: float = 1e-6
) -> float:
    """F (eq. 2) on the frozen encoder's pooled states: mean cross-entropy + l2/2 ||Theta||^2, by L-BFGS.

    Returns the gradient norm at the end (the influence function assumes it is about 0).
    """
    objective = StageObjective(list(head.parameters()), head.ffn, pooled, labels, l2=l2)
    return fit_full_batch(objective, tol=tol)


@torch.no_grad()
def classifier_accuracy(head: Classifier, pooled: Tensor, labels: Tensor) -> float:
    return float((head.ffn(pooled).argmax(-1) == labels).float().mean())


class BagOfWords:
    """The baseline: logistic regression on word counts (the training tweets' most frequent words)."""

    def __init__(self, train: Sequence[Sequence[str]], size: int) -> None:
        from collections import Counter

        counts = Counter(t for tokens in train for t in set(tokens))
        self.index = {w: i for i, (w, _) in enumerate(counts.most_common(size))}
        self.weight = torch.zeros(len(self.index))
        self.bias = torch.zeros(())

    def counts(self, texts: Sequence[Sequence[str]]) -> Tensor:
        x = torch.zeros(len(texts), len(self.index))
        for row, tokens in enumerate(texts):
            for t in tokens:
                if t in self.index:
                    x[row, self.index[t]] += 1
        return x

    def fit(self, texts: Sequence[Sequence[str]], labels: Tensor, l2: float) -> float:
        """Mean logistic loss + l2/2 ||w||^2 by L-BFGS; returns the final gradient norm."""
        x, y = self.counts(texts), labels.float()
        w = nn.Parameter(self.weight.clone())
        b = nn.Parameter(self.bias.clone())
        norm = fit_full_batch(
            Plain(
                [w, b],
                lambda: (
                    nnf.binary_cross_entropy_with_logits(x @ w + b, y)
                    + l2 / 2 * (w**2).sum()
                ),
            )
        )
        self.weight, self.bias = w.detach(), b.detach()
        return norm

    def accuracy(self, texts: Sequence[Sequence[str]], labels: Tensor) -> float:
        return float(
            (((self.counts(texts) @ self.weight + self.bias) > 0).long() == labels)
            .float()
            .mean()
        )
