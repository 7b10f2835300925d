"""The smallest rung-3 configuration that still converges: the tests of the removal runs
share it, so that one edit resizes them all."""

from __future__ import annotations

from experiments.converged_loo import ConvergedConfig

TINY = ConvergedConfig(
    pretrain_size=120,
    finetune_size=60,
    test_size=30,
    channels=(2, 4),
    adam_steps=300,
    removals=4,
    device="cpu",
)
