"""The section-4 pipeline: cached training keyed by config, removal choice, controlled retraining.

The weight cache itself (its key, its file format) is tested in test_cache.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from experiments import configs, scoring, sec41, transfer_training, validation
from experiments.configs import CPU, PAPER, QUICK, TRAINING_FIELDS, TransferConfig
from experiments.data import DatasetNotFoundError
from experiments.provenance import read_results
from experiments.transfer_data import load_transfer_data

TINY = TransferConfig(
    dataset="mnist",
    pretrain_classes=(0, 1),
    finetune_classes=(2, 3),
    pretrain_size=120,
    finetune_size=80,
    test_size=60,
    batch_size=32,
    pretrain_steps=8,
    finetune_steps=8,
    retrain_pretrain_steps=3,
    retrain_finetune_steps=3,
    hessian_examples=40,
    cg_iters=3,
    removals=4,
)


@pytest.fixture(scope="module")
def tiny_data():
    try:
        return load_transfer_data(TINY)
    except DatasetNotFoundError as error:
        pytest.skip(f"needs MNIST: {error}")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUENCE_CACHE", str(tmp_path))
    return tmp_path


def _weights(trained):
    return [
        p.detach().clone()
        for m in (
            trained.net.embedding,
            trained.net.pretrain_head,
            trained.net.finetune_head,
        )
        for p in m.parameters()
    ]


def test_task_split_shapes(tiny_data):
    assert tiny_data.pretrain[0].shape == (120, 1, 28, 28)
    assert set(tiny_data.pretrain[1].tolist()) == {0, 1}
    assert set(tiny_data.finetune[1].tolist()) == {0, 1}  # relabelled 2, 3 -> 0, 1
    assert len(tiny_data.test[1]) == 60


def test_cache_is_reused_and_keyed_by_config(tiny_data, cache, monkeypatch):
    first = transfer_training.train_transfer(TINY, tiny_data)
    assert len(list(cache.glob("*.pt"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the cache holds these weights")

    monkeypatch.setattr(transfer_training, "fit_adam", no_training)
    again = transfer_training.train_transfer(
        TINY.replace(removals=9, cg_iters=7), tiny_data
    )  # scoring fields: same key
    assert all(torch.equal(a, b) for a, b in zip(_weights(first), _weights(again)))
    assert TINY.replace(pretrain_steps=9).training_key() != TINY.training_key()


def test_stale_or_broken_cache_is_retrained(tiny_data, cache):
    transfer_training.train_transfer(TINY, tiny_data)
    (path,) = cache.glob("*.pt")
    saved = torch.load(path, weights_only=True)
    meta = json.loads(saved["meta"])
    meta["config"]["pretrain_steps"] = 999  # as if an older config had written this file
    torch.save({**saved, "meta": json.dumps(meta)}, path)
    with pytest.warns(UserWarning, match="stale"):
        transfer_training.train_transfer(TINY, tiny_data)
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="cannot be used"):
        transfer_training.train_transfer(TINY, tiny_data)
    meta = json.loads(torch.load(path, weights_only=True)["meta"])
    assert meta["config"] == json.loads(json.dumps(TINY.training_fields()))


def test_pick_removals_mixes_both_tails_and_the_bulk():
    scores = torch.arange(100.0)
    picked = scoring.pick_removals(scores, 9, seed=0)
    assert len(set(picked.tolist())) == 9
    assert {99, 98, 97} <= set(picked.tolist()) and {0, 1, 2} <= set(picked.tolist())
    assert any(3 <= i <= 96 for i in picked.tolist())


def test_control_retraining_is_deterministic(tiny_data, cache):
    trained = transfer_training.train_transfer(TINY, tiny_data)
    a = validation.retrained_loss(TINY, tiny_data, trained, None)
    b = validation.retrained_loss(TINY, tiny_data, trained, None)
    assert (
        a == b
    )  # same batches, same seed: the controlled difference isolates the removal


@pytest.mark.parametrize("case", ["fixed", "updated"])
def test_run_validation_end_to_end(tiny_data, cache, case):
    result = sec41.run_validation(TINY.replace(case=case), identity=True, pairs=1)
    assert TransferConfig.from_dict(result["config"]) == TINY.replace(case=case)
    v = result["validation"]
    assert (
        len(v["indices"])
        == len(v["raw"])
        == len(v["controlled"])
        == len(v["predicted"])
        == TINY.removals
    )
    assert len(result["scores"]) == result["m"] == 120
    assert all(math.isfinite(x) for x in v["raw"] + v["controlled"] + v["predicted"])
    assert -1 <= result["agreement"]["controlled"]["pearson_r"] <= 1
    # each stage's solver, its damping and the operator the damping is added to
    assert {
        stage: (s["damping"], s["operator"]) for stage, s in result["solvers"].items()
    } == {
        "pretrain": (TINY.pretrain_damping, "H2"),
        "finetune": (TINY.finetune_damping, "H2"),
    }
    assert {s["operator"] for s in result["identity"]["solvers"].values()} == {"I"}
    assert len(result["identity"]["predicted"]) == TINY.removals
    assert result["pairs"][0]["test_label"] != result["pairs"][0]["predicted_label"]
    # The relations that define the outputs:
    scores, m, n_test = torch.tensor(result["scores"]), result["m"], result["n_test"]
    idx = torch.tensor(v["indices"])
    expected = (
        -scores[idx] / (m * n_test)
    ).tolist()  # eq. 8, removal is eps = -1/m, loss is a mean over x_t
    assert v["predicted"] == pytest.approx(
        expected, rel=1e-5
    )  # the stored scores are rounded to 6 digits
    drift = v["control_loss"] - v["original_loss"]
    assert v["controlled"] == pytest.approx([r - drift for r in v["raw"]], abs=1e-12)
    identity = torch.tensor(result["identity"]["scores"])
    assert result["identity"]["predicted"] == pytest.approx(
        (-identity[idx] / (m * n_test)).tolist(), rel=1e-5
    )
    from experiments.stats import agreement

    assert result["agreement"]["controlled"]["pearson_r"] == pytest.approx(
        agreement(v["predicted"], v["controlled"]).pearson_r, abs=1e-12
    )


@pytest.mark.parametrize("field", TRAINING_FIELDS)
def test_every_training_field_changes_the_cache_key(field):
    value = getattr(TINY, field)
    changed = {
        str: {"mnist": "cifar10", "fixed": "updated"}.get(value, value + "x")
        if isinstance(value, str)
        else None,
        tuple: (*value, 9) if isinstance(value, tuple) else None,
        float: value * 2 + 1e-3 if isinstance(value, float) else None,
        int: value + 1 if isinstance(value, int) else None,
        type(None): 100,
    }[type(value)]
    assert TINY.replace(**{field: changed}).training_key() != TINY.training_key()


def test_every_dataclass_field_that_shapes_training_is_keyed():
    """A new field that changes training must be marked as such; the others only score,
    validate or say where to run (the cache keys on the resolved device type instead)."""
    scoring_or_validation = {
        "device",
        "test_size",
        "retrain_pretrain_steps",
        "retrain_finetune_steps",
        "pretrain_damping",
        "finetune_damping",
        "hessian_examples",
        "finetune_hessian_examples",
        "cg_iters",
        "removals",
        "retrain_seed",
    }
    fields = set(TINY.as_dict())
    assert fields == set(TRAINING_FIELDS) | scoring_or_validation, sorted(
        fields ^ (set(TRAINING_FIELDS) | scoring_or_validation)
    )


def test_case2_cache_reloads_both_w_star_and_w_bar(tiny_data, cache, monkeypatch):
    config = TINY.replace(case="updated")
    first = transfer_training.train_transfer(config, tiny_data)
    assert first.net.pretrained_embedding is not first.net.embedding
    moved = sum(
        (a - b).norm()
        for a, b in zip(
            first.net.embedding.parameters(), first.net.pretrained_embedding.parameters()
        )
    )
    assert moved > 0  # finetuning moved W away from W_bar

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the cache holds these weights")

    monkeypatch.setattr(transfer_training, "fit_adam", no_training)
    again = transfer_training.train_transfer(config, tiny_data)
    for a, b in (
        (first.net.embedding, again.net.embedding),
        (first.net.pretrained_embedding, again.net.pretrained_embedding),
    ):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert again.net.pretrained_embedding is not again.net.embedding


def test_a_finetuning_replicate_shares_the_pretraining_and_refits_the_head(
    tiny_data, cache
):
    """``finetune_seed`` (section 4.3's replicates) changes the head's initialization and the
    batch order of finetuning only: W_bar and U are the pretraining's, loaded, not retrained."""
    first = transfer_training.train_transfer(TINY, tiny_data)
    replicate = TINY.replace(finetune_seed=5)
    other = transfer_training.train_transfer(replicate, tiny_data, pretrained_by=TINY)
    for a, b in (
        (first.net.embedding, other.net.embedding),
        (first.net.pretrain_head, other.net.pretrain_head),
    ):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    heads = zip(
        first.net.finetune_head.parameters(), other.net.finetune_head.parameters()
    )
    assert not all(torch.equal(p, q) for p, q in heads)
    assert replicate.training_key() != TINY.training_key()
    assert TINY.replace(finetune_seed=None).training_key() == TINY.training_key()
    again = transfer_training.train_transfer(replicate, tiny_data, pretrained_by=TINY)
    assert all(  # cached under its own key: loaded again, the same head
        torch.equal(p, q)
        for p, q in zip(
            other.net.finetune_head.parameters(), again.net.finetune_head.parameters()
        )
    )


def test_scales_keep_paper_hyperparameters():
    for name, paper in PAPER.items():
        for scaled in (CPU[name], QUICK[name]):
            assert (
                scaled.pretrain_damping,
                scaled.finetune_damping,
                scaled.alpha,
                scaled.case,
            ) == (paper.pretrain_damping, paper.finetune_damping, paper.alpha, paper.case)
    assert (
        PAPER["mnist-fixed"].batch_size == 512
        and PAPER["cifar10-fixed"].batch_size == 128
    )
    assert (
        PAPER["cifar10-fixed"].retrain_pretrain_steps,
        PAPER["cifar10-fixed"].retrain_finetune_steps,
    ) == (6000, 3000)
    assert PAPER["cifar10-updated"].retrain_finetune_steps == 1000


def test_retest_measures_the_same_removals_with_another_batch_order(
    tiny_data, cache, tmp_path, monkeypatch
):
    monkeypatch.setitem(configs.SCALES, "tiny", {"mnist-fixed": TINY})
    monkeypatch.setitem(configs.RETEST_SIZE, "mnist-fixed", 3)
    monkeypatch.setitem(
        configs.SECTION_41, "mnist-fixed", dict(pairs=0)
    )  # run_validation has its own test
    path = tmp_path / "sec41.json"
    sec41.reproduce_section41(
        path, scale="tiny", only=["mnist-fixed"]
    )  # retests 3 of the 4 removals too
    written = read_results(path)["results"]["experiments"]["mnist-fixed"]["retest"]
    assert (
        written["retrain_seed"] == configs.RETEST_SEED
        and len(written["validation"]["indices"]) == 3
    )
    with pytest.raises(ValueError, match="retrain_seed"):
        sec41.retest_section41(path, "mnist-fixed", TINY.continuation_seed)
    with pytest.raises(ValueError, match="size"):
        sec41.retest_section41(path, "mnist-fixed", 5, size=2)
    retest = sec41.retest_section41(path, "mnist-fixed", 5, size=3)
    stored = read_results(path)["results"]["experiments"]["mnist-fixed"]
    first = stored["validation"]
    assert stored["retest"]["positions"] == [0, 2, 3] and retest["retrain_seed"] == 5
    # a second batch order is added beside the first retest, not over it
    assert stored["retest"]["retrain_seed"] == configs.RETEST_SEED
    assert [r["retrain_seed"] for r in stored["further_retests"]] == [5]
    assert retest["validation"]["indices"] == [first["indices"][j] for j in (0, 2, 3)]
    assert retest["validation"]["predicted"] == pytest.approx(
        [first["predicted"][j] for j in (0, 2, 3)], rel=1e-5
    )
    assert (
        retest["validation"]["control_loss"] != first["control_loss"]
    )  # other batches, another control
    # the seed is the only difference: at the first seed, retraining gives the first measurement back
    again = validation.validate(
        TINY,
        tiny_data,
        transfer_training.train_transfer(TINY, tiny_data),
        torch.tensor(stored["scores"]),
        torch.tensor(first["indices"][:1]),
    )
    assert again.controlled == [first["controlled"][0]]


def test_damping_sweep_predicts_the_stored_removals_again(tiny_data, cache):
    from experiments.damping import damping_sweep

    result = sec41.run_validation(TINY, identity=True, pairs=0)
    sweep = damping_sweep(
        result, dampings=(1e-3, 1.0), stages=("pretrain",), iters=5, lanczos_steps=5
    )
    assert [(r["on"], r["damping"]) for r in sweep["rows"]] == [
        ("H^2", 1e-3),
        ("H^2", 1.0),
        ("H", 1e-3),
        ("H", 1.0),
    ]
    # the identity limit is Fig. 3's ablation on the same removals
    assert sweep["identity"]["controlled"]["pearson_r"] == pytest.approx(
        result["identity"]["agreement"]["controlled"]["pearson_r"], abs=1e-5
    )
    lowest = sweep["ritz_values"][0]
    for row in sweep["rows"]:
        if "skipped" in row:
            assert row["on"] == "H" and row["damping"] <= -lowest
        else:
            assert -1 <= row["controlled"]["pearson_r"] <= 1 and row["iterations"] <= 5


def test_finetuning_on_another_configs_pretraining_equals_training_from_scratch(
    tiny_data, cache
):
    source = TINY.replace(finetune_steps=5)
    target = TINY.replace(finetune_steps=7)
    scratch = transfer_training.train_transfer(target, tiny_data, cache=False)
    reused = transfer_training.train_transfer(target, tiny_data, pretrained_by=source)
    assert all(torch.equal(a, b) for a, b in zip(_weights(scratch), _weights(reused)))
    assert reused.history["pretrain"] == scratch.history["pretrain"]
    with pytest.raises(ValueError, match="pretrain_steps"):
        transfer_training.train_transfer(  # a config not cached yet, so the check runs
            target.replace(finetune_steps=6),
            tiny_data,
            pretrained_by=source.replace(pretrain_steps=9),
        )


def test_section_configs_change_only_what_the_paper_varies():
    for scale in configs.SCALES:
        a, b = configs.section43(scale).values()
        base = configs.SCALES[scale]["cifar10-fixed"]
        assert (a.finetune_classes, b.finetune_classes) == ((2, 6), (1, 4))
        assert a.pretrain_classes == b.pretrain_classes == base.pretrain_classes
        assert a.replace(finetune_classes=b.finetune_classes) == b
        c, d = configs.section44(scale).values()
        assert c.case == d.case == "updated"
        assert d.finetune_size == 3 * c.finetune_size
        assert d.finetune_steps == 3 * c.finetune_steps
        assert (
            d.replace(finetune_size=c.finetune_size, finetune_steps=c.finetune_steps) == c
        )
        runs = configs.section42_runs(scale)
        assert len(set(runs)) == len(runs)
        first_curve = next(i for i, r in enumerate(runs) if r[1] not in (0.0, 0.1))
        assert {r[0] for r in runs[:first_curve]} == {"none", "top", "random", "bottom"}


def test_a_config_recognizes_itself_read_back_from_a_results_file():
    config = CPU["cifar10-fixed"]
    stored = json.loads(json.dumps(config.as_dict()))
    assert stored != config.as_dict()  # tuples came back as lists
    assert config.is_stored_as(stored)
    # a file written before a field existed still matches where the field has its default
    older = {k: v for k, v in stored.items() if k not in ("retrain_seed", "device")}
    assert config.is_stored_as(older)
    # where it ran is provenance, not the experiment: a GPU run matches a CPU run's file
    assert config.replace(device="cpu").is_stored_as({**stored, "device": "cuda"})
    assert not config.replace(cg_iters=config.cg_iters + 1).is_stored_as(stored)
    assert not config.is_stored_as({**stored, "no_such_field": 1})
    assert not config.is_stored_as(None)


def test_mean_of_orders_averages_every_batch_order_and_states_its_ceiling():
    """Three orders of four removals: the mean, the pairwise test-retest r, Spearman-Brown."""
    first = [1.0, 2.0, 3.0, 4.0, 0.0]
    second, third = [1.5, 1.5, 3.5, 3.0], [0.5, 2.5, 2.5, 4.5]
    positions = [0, 1, 2, 3]

    def order(seed: int, controlled: list[float]) -> dict:
        return {
            "retrain_seed": seed,
            "positions": positions,
            "validation": {"controlled": controlled},
        }

    stored = {
        "config": TINY.as_dict(),
        "validation": {"controlled": first, "predicted": [4.0, 3.0, 2.0, 1.0, 9.0]},
        "identity": {"predicted": [1.0, 2.0, 3.0, 4.0, 9.0]},
        "retest": order(7, second),
        "further_retests": [order(8, third)],
    }
    result = sec41.mean_of_orders(stored)
    assert result["orders"] == 3
    assert result["seeds"] == [TINY.continuation_seed, 7, 8]
    mean = [(a + b + c) / 3 for a, b, c in zip(first, second, third)]
    r = lambda a, b: torch.corrcoef(torch.tensor([a, b]))[0, 1].item()  # noqa: E731
    assert result["score"]["pearson_r"] == pytest.approx(r([4, 3, 2, 1], mean))
    assert result["identity"]["pearson_r"] == pytest.approx(r([1, 2, 3, 4], mean))
    pairs = [r(first[:4], second), r(first[:4], third), r(second, third)]
    assert result["test-retest r"] == pytest.approx(pairs)
    r_tt = sum(pairs) / 3
    assert result["ceiling"] == pytest.approx(math.sqrt(3 * r_tt / (1 + 2 * r_tt)))
    stored["further_retests"][0]["positions"] = [0, 1, 2, 4]
    with pytest.raises(ValueError, match="different removals"):
        sec41.mean_of_orders(stored)
