"""experiments.cache.WeightCache: keyed on the training fields, the network's structure and the
device type; state dicts and JSON metadata only, loaded with ``weights_only=True``."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from experiments.cache import WeightCache, structure_hash
from experiments.configs import TransferConfig

CPU = torch.device("cpu")
CONFIG = TransferConfig(pretrain_size=100, pretrain_steps=5)


def _modules(
    activation: type[nn.Module] = nn.Tanh, seed: int = 0
) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    return {
        "embedding": nn.Sequential(nn.Linear(3, 4), activation()),
        "head": nn.Linear(4, 2),
    }


def _adam_state(modules: dict[str, nn.Module]) -> dict:
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    return optimizer.state_dict()


def test_round_trip_restores_weights_adam_state_and_history(tmp_path):
    cache, saved = WeightCache(tmp_path), _modules(seed=0)
    adam = _adam_state(saved)
    path = cache.save(
        CONFIG,
        saved,
        CPU,
        pretrain_adam=adam,
        finetune_adam={},
        history={"pretrain": [1.5]},
    )
    fresh = _modules(seed=1)
    rest = cache.load(CONFIG, fresh, CPU)
    assert rest is not None and rest["history"] == {"pretrain": [1.5]}
    for name in saved:
        for p, q in zip(saved[name].parameters(), fresh[name].parameters()):
            assert torch.equal(p, q)
    assert torch.equal(
        rest["pretrain_adam"]["state"][0]["exp_avg"], adam["state"][0]["exp_avg"]
    )
    # the file is tensors, numbers, lists, dicts and a JSON string: no pickled objects
    raw = torch.load(path, weights_only=True)
    assert json.loads(raw["meta"])["config"]["pretrain_steps"] == 5


def test_an_architecture_change_with_equal_shapes_misses(tmp_path):
    cache = WeightCache(tmp_path)
    tanh, relu = _modules(nn.Tanh), _modules(nn.ReLU)
    assert [p.shape for m in tanh.values() for p in m.parameters()] == [
        p.shape for m in relu.values() for p in m.parameters()
    ]
    assert structure_hash(tanh) != structure_hash(relu)
    cache.save(CONFIG, tanh, CPU, pretrain_adam={}, finetune_adam={}, history={})
    assert cache.path(CONFIG, tanh, CPU) != cache.path(CONFIG, relu, CPU)
    assert cache.load(CONFIG, relu, CPU) is None
    double = {k: m.double() for k, m in _modules(nn.Tanh).items()}
    assert cache.path(CONFIG, double, CPU) != cache.path(CONFIG, tanh, CPU)


def test_the_key_holds_the_training_fields_and_the_device_type_only(tmp_path):
    cache, modules = WeightCache(tmp_path), _modules()
    path = cache.path(CONFIG, modules, CPU)
    assert cache.path(CONFIG.replace(pretrain_steps=6), modules, CPU) != path
    assert cache.path(CONFIG.replace(cg_iters=7, removals=3), modules, CPU) == path
    # a config's device string is not keyed, the device it resolves to is
    assert cache.path(CONFIG.replace(device="cpu"), modules, CPU) == path
    assert cache.path(CONFIG, modules, torch.device("cuda")) != path


def test_a_file_made_by_another_config_under_this_name_warns_and_misses(tmp_path):
    cache, modules = WeightCache(tmp_path), _modules()
    path = cache.save(
        CONFIG, modules, CPU, pretrain_adam={}, finetune_adam={}, history={}
    )
    saved = torch.load(path, weights_only=True)
    meta = json.loads(saved["meta"])
    meta["structure"] = "something else"
    torch.save({**saved, "meta": json.dumps(meta)}, path)
    with pytest.warns(UserWarning, match="stale"):
        assert cache.load(CONFIG, modules, CPU) is None


def test_an_old_pickled_file_is_refused_not_unpickled(tmp_path):
    cache, modules = WeightCache(tmp_path), _modules()
    path = cache.path(CONFIG, modules, CPU)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": CONFIG, "weights": {}}, path)  # a pickled dataclass
    with pytest.warns(UserWarning, match="cannot be used"):
        assert cache.load(CONFIG, modules, CPU) is None


def test_the_root_is_influence_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUENCE_CACHE", str(tmp_path / "c"))
    assert WeightCache.from_env().root == tmp_path / "c"
