"""Section 4.5: the text, the language model, its influence scores, and the pipeline at a tiny scale.

The scores are checked three ways on a language model small enough for a dense Hessian:
MultiStage with CG against MultiStage with Exact, and both against the formula of eq. 11
written out independently with torch.func.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as nnf
from torch.func import functional_call, hessian, jacfwd, jacrev

from experiments import lm, sec45, text
from experiments.data import DatasetNotFoundError
from experiments.provenance import read_results
from influence import CG, Exact, MultiStage

torch.set_num_threads(1)

SENTENCES = [[2, 5, 6, 7, 3], [2, 8, 9, 3], [2, 10, 11, 4, 5, 6, 3], [2, 7, 7, 3]]


def tiny(vocab: int = 12, dim: int = 3, hidden: int = 3, dtype=torch.float64):
    encoder, head = lm.build_lm(lm.LMSize(vocab, dim, hidden), seed=0)
    classifier = lm.Classifier(hidden, width=4)
    return encoder.to(dtype), head.to(dtype), classifier.to(dtype)


def test_shapes():
    encoder, head, classifier = tiny(dtype=torch.float32)
    x = text.pad(SENTENCES)
    features = encoder(x)
    assert features.shape == (4, 7, 2 * 3 + 1)
    assert head(features).shape == (4, 6, 2, 12)
    assert lm.lm_losses(head(features), x).shape == (4,)
    assert classifier(features).shape == (4, 2)


def test_padding_does_not_change_g_or_the_pooled_states():
    encoder, head, classifier = tiny()
    alone = torch.stack(
        [lm.lm_losses(head(encoder(text.pad([s]))), text.pad([s]))[0] for s in SENTENCES]
    )
    for width in (7, 11):
        x = text.pad(SENTENCES, width)
        torch.testing.assert_close(lm.lm_losses(head(encoder(x)), x), alone)
        torch.testing.assert_close(
            classifier(encoder(x)), classifier(encoder(text.pad(SENTENCES)))
        )


def test_backward_direction_reads_each_row_reversed():
    h = torch.arange(2 * 5, dtype=torch.float64).reshape(2, 5, 1)
    out = lm.reverse_padded(h, torch.tensor([3, 5]))
    assert out[0, :, 0].tolist() == [2, 1, 0, 3, 4]
    assert out[1, :, 0].tolist() == [9, 8, 7, 6, 5]
    torch.testing.assert_close(lm.reverse_padded(out, torch.tensor([3, 5])), h)


def test_lm_loss_falls_on_a_tiny_corpus():
    encoder, head, _ = tiny(vocab=12, dim=8, hidden=8, dtype=torch.float32)
    corpus = SENTENCES * 8
    history = lm.train_lm(encoder, head, corpus, epochs=15, batch_size=8, lr=1e-2, seed=0)
    assert sum(history[-4:]) / 4 < 0.8 * sum(history[:4]) / 4
    assert (
        lm.perplexity(encoder, head, SENTENCES) < 12
    )  # below the uniform guess over 12 ids


def test_wiki_markup_is_stripped():
    wiki = (
        "{{Infobox country|name=Foo {{nested|x}}}}\n"
        "'''Foo''' is a [[country]] in [[Europe|western Europe]].<ref>A source {{cite|y}}</ref> It has "
        "a [http://example.com flag].<ref name=a/>\n"
        "== History ==\n"
        "{| class=wikitable\n| a || b\n|}\n"
        "* a list item\n"
        "[[File:Map.png|thumb|A [[map]]]]\n"
        "The capital is <b>Bar</b> &amp; more.<!-- hidden -->\n"
        "[[Category:Countries]]"
    )
    clean = text.strip_wiki_markup(wiki)
    assert clean.splitlines() == [
        "Foo is a country in western Europe. It has a flag.",
        "The capital is Bar & more.",
    ]
    assert text.split_sentences(clean.splitlines()[0]) == [
        "Foo is a country in western Europe.",
        "It has a flag.",
    ]
    assert text.tokenize("Don't stop, 2 cars!") == [
        "don't",
        "stop",
        ",",
        "2",
        "cars",
        "!",
    ]


def _problem():
    encoder, head, classifier = tiny()
    torch.manual_seed(1)
    pretrain = text.pad(
        [[2, *torch.randint(4, 12, (n,)).tolist(), 3] for n in (2, 3, 4, 5, 3, 2)]
    )
    tweets = text.pad(
        [[2, *torch.randint(1, 12, (n,)).tolist(), 3] for n in (3, 4, 2, 5, 3, 4, 2, 3)]
    )
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
    return encoder, head, classifier, pretrain, tweets, labels


def _dense_scores(
    encoder, head, classifier, pretrain, tweets, labels, test, l2, damp1, damp2
):
    """Eq. 11 written out with dense torch.func derivatives, independently of the library."""
    names = [dict(m.named_parameters()) for m in (encoder, head, classifier)]
    sizes = [sum(p.numel() for p in n.values()) for n in names]

    def unflat(vector, named):
        out, i = {}, 0
        for k, p in named.items():
            out[k] = vector[i : i + p.numel()].reshape(p.shape)
            i += p.numel()
        return out

    def g(phi, x):
        w, u = phi[: sizes[0]], phi[sizes[0] :]
        features = functional_call(encoder, unflat(w, names[0]), (x,))
        return lm.lm_losses(functional_call(head, unflat(u, names[1]), (features,)), x)

    def f(w, theta, x, y):
        features = functional_call(encoder, unflat(w, names[0]), (x,))
        return nnf.cross_entropy(
            functional_call(classifier, unflat(theta, names[2]), (features,)),
            y,
            reduction="none",
        )

    flat = [torch.cat([p.detach().reshape(-1) for p in n.values()]) for n in names]
    phi, w, theta = torch.cat(flat[:2]), flat[0], flat[2]
    h_g = hessian(lambda p: g(p, pretrain).mean())(phi) + damp1 * torch.eye(
        len(phi), dtype=phi.dtype
    )
    h_f = hessian(lambda t: f(w, t, tweets, labels).mean())(theta) + (
        l2 + damp2
    ) * torch.eye(len(theta), dtype=phi.dtype)
    mixed = jacfwd(
        jacrev(lambda t, w_: f(w_, t, tweets, labels).mean(), argnums=0), argnums=1
    )(theta, w)  # [pT, pW]
    grad_w = jacrev(lambda w_: f(w_, theta, *test).sum())(w)
    grad_t = jacrev(lambda t: f(w, t, *test).sum())(theta)
    u_w = mixed.T @ torch.linalg.solve(h_f, grad_t) - grad_w
    v2 = torch.linalg.solve(h_g, torch.cat([u_w, torch.zeros(sizes[1], dtype=phi.dtype)]))
    return jacrev(lambda p: g(p, pretrain))(phi) @ v2


def test_scores_match_exact_and_a_dense_computation():
    encoder, head, classifier, pretrain, tweets, labels = _problem()
    test = (tweets[:2], labels[:2])
    l2 = 1e-2
    ms = MultiStage(
        encoder,
        head,
        classifier,
        pretrain_loss=lm.lm_losses,
        finetune_l2=l2,
        case="fixed",
    )
    dense_h = ms.pretrain_hessian((pretrain, pretrain)).to_dense()
    damp1 = max(
        0.1, 2 * float(-torch.linalg.eigvalsh(dense_h)[0])
    )  # H_G + damp1 I positive definite
    damp2 = 1e-3
    with warnings.catch_warnings():
        # random weights are not stationary: expected here, and only that
        warnings.filterwarnings(
            "ignore", message=".*has gradient norm", category=RuntimeWarning
        )
        exact = ms.scores(
            (pretrain, pretrain),
            (tweets, labels),
            test,
            pretrain_solver=Exact(damp1),
            finetune_solver=Exact(damp2),
        )
        cg = ms.scores(
            (pretrain, pretrain),
            (tweets, labels),
            test,
            pretrain_solver=CG(damp1, iters=500, tol=1e-12, squared=False),
            finetune_solver=CG(damp2, iters=500, tol=1e-12, squared=False),
        )
    dense = _dense_scores(
        encoder, head, classifier, pretrain, tweets, labels, test, l2, damp1, damp2
    )
    assert exact.abs().max() > 1e-6  # not trivially zero
    torch.testing.assert_close(cg, exact, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(exact, dense, rtol=1e-6, atol=1e-9)


TINY = sec45.QUICK.replace(
    sentences=200,
    held_out=20,
    vocab=60,
    dim=4,
    hidden=4,
    epochs=1,
    train_tweets=120,
    test_tweets=60,
    table_tweets=1,
    hessian_sentences=12,
    lanczos_steps=3,
    cg_iters=5,
    score_batch=32,
    loo_top=2,
    loo_random=2,
    loo_iters=5,
    figure_points=50,
)


def test_section45_end_to_end_writes_results_with_provenance(tmp_path, monkeypatch):
    try:
        text.text_file(text.WIKI)
    except DatasetNotFoundError as error:
        pytest.skip(f"needs the text data: {error}")
    monkeypatch.setitem(sec45.SCALES, "quick", TINY)
    path = tmp_path / "sec45.json"
    sec45.reproduce_section45(path, scale="quick")
    stored = read_results(path)
    assert (
        set(stored) == {"config", "provenance", "results"}
        and stored["provenance"]["commit"]
    )
    e = stored["results"]["experiments"]["tweets"]
    assert e["scale"] == "quick" and e["config"] == dataclasses.asdict(TINY)
    assert len(e["table"]["rows"]) == 2 and e["timing"]["sentences"] == 200
    assert len(e["check"]["predicted"]) == 4 and e["perplexity"]["held_out"] > 1
    # the check's records: the identity's scores, each sentence's ||grad g||, and the last
    # gradient norms of its +eps and -eps re-optimizations
    c = e["check"]
    assert len(c["identity_predicted"]) == 4 and c["identity"]["n"] == 4
    assert (
        len(c["sentence_gradient_norms"]) == 4 and min(c["sentence_gradient_norms"]) > 0
    )
    assert [len(n) for n in c["gradient_norms"]] == [2] * 4
    assert c["max_gradient_norm"] == max(max(n) for n in c["gradient_norms"])
    n = e["parameters"]
    assert e["timing"]["parameters_with_classifier"] == n["W"] + n["U"] + n["Theta"]
    assert {"linear_probe", "bag_of_lm_words"} <= set(e["accuracy"])
    # each stage's solver, damping and operator; lambda_1 is the one the scores used
    assert e["solvers"]["pretrain"]["damping"] == e["influence"]["damping"]
    assert e["solvers"]["finetune"] == {
        "solver": repr(CG(TINY.finetune_damping, TINY.finetune_cg_iters, squared=False)),
        "damping": TINY.finetune_damping,
        "operator": "H",
    }
    with pytest.raises(ValueError, match="not reproduced here"):
        sec45.reproduce_section45(path, scale="paper")
