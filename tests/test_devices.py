"""Where experiments run: ``experiments.devices.resolve``, and a config's device reaching the data,
the network and the pipeline (on the CPU here; tests/test_gpu.py repeats the work on CUDA)."""

from __future__ import annotations

import pytest
import torch

from experiments.configs import TransferConfig
from experiments.devices import resolve
from experiments.pipeline import Lab
from experiments.transfer_training import transfer_net


def test_auto_resolves_to_cuda_where_present_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve("auto").type == expected
    assert resolve().type == expected
    assert resolve("cpu") == torch.device("cpu")


def test_a_bad_or_absent_device_is_an_error():
    with pytest.raises(ValueError, match="device"):
        resolve("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve("cuda")


def test_a_config_defaults_to_auto_and_a_lab_sets_it():
    config = TransferConfig()
    assert config.device == "auto"
    assert Lab(device="cpu").run(config).config.device == "cpu"
    assert Lab().run(config).config.device == "auto"  # the config's own
    assert Lab(device="cpu").run(config).device == torch.device("cpu")


def test_the_network_is_built_on_the_configs_device():
    net = transfer_net(TransferConfig(device="cpu"))
    modules = (net.embedding, net.pretrain_head, net.finetune_head)
    assert {p.device.type for m in modules for p in m.parameters()} == {"cpu"}


def test_seeded_initialization_is_the_same_whatever_the_device_string():
    torch.manual_seed(0)
    auto = transfer_net(
        TransferConfig(device="auto" if not torch.cuda.is_available() else "cpu")
    )
    torch.manual_seed(0)
    cpu = transfer_net(TransferConfig(device="cpu"))
    for p, q in zip(auto.embedding.parameters(), cpu.embedding.parameters()):
        assert torch.equal(p, q)
