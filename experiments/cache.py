"""The weight cache: trained two-stage weights kept on disk, so a chapter re-run does not retrain.

A file is found by a key made of three things, and holds them again to be checked on load:

- the config's training fields (``TransferConfig.training_fields``, marked once on the fields);
- the structure of the network (:func:`structure_hash`): module types, parameter and buffer
  names, shapes and dtypes, so a changed architecture misses even where the shapes agree;
- the resolved device type, so weights trained on a GPU are never served to a CPU run.

The file holds only state dicts, Adam's state, the loss history and JSON metadata, and is read
with ``torch.load(..., weights_only=True)``: no pickle runs on load. Files written before this
format have other names and are never read; those configs retrain once.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .configs import TransferConfig

FORMAT = 2  # 1: the pickled files keyed on the config alone


def structure_hash(modules: Mapping[str, nn.Module]) -> str:
    """A hash of what the modules are, not what they hold: each one's ``repr`` (types and
    hyperparameters), and the name, shape and dtype of every parameter and buffer."""
    parts = []
    for name, module in sorted(modules.items()):
        tensors = [
            f"{key}:{tuple(t.shape)}:{t.dtype}" for key, t in module.state_dict().items()
        ]
        parts.append(f"{name}\n{module!r}\n" + "\n".join(tensors))
    return hashlib.sha256("\n\n".join(parts).encode()).hexdigest()[:16]


class WeightCache:
    """Trained weights under ``root``, one file per (training fields, structure, device type)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"WeightCache({str(self.root)!r})"

    @classmethod
    def from_env(cls) -> WeightCache:
        """The cache at ``$INFLUENCE_CACHE``, else ``~/.cache/influence``."""
        return cls(
            os.environ.get("INFLUENCE_CACHE", Path.home() / ".cache" / "influence")
        )

    @staticmethod
    def metadata(
        config: TransferConfig,
        modules: Mapping[str, nn.Module],
        device: torch.device,
    ) -> dict[str, Any]:
        """What names a file and is checked on load, as JSON reads it back (tuples as lists)."""
        return json.loads(
            json.dumps(
                {
                    "format": FORMAT,
                    "config": config.training_fields(),
                    "structure": structure_hash(modules),
                    "device": device.type,
                }
            )
        )

    def path(
        self,
        config: TransferConfig,
        modules: Mapping[str, nn.Module],
        device: torch.device,
    ) -> Path:
        """The file of these weights: ``<dataset>-<case>-<key>.pt``."""
        meta = self.metadata(config, modules, device)
        key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
        return self.root / f"{config.dataset}-{config.case}-{key}.pt"

    def load(
        self,
        config: TransferConfig,
        modules: Mapping[str, nn.Module],
        device: torch.device,
    ) -> dict[str, Any] | None:
        """Load the cached weights into ``modules`` and return the rest of the file
        (``pretrain_adam``, ``finetune_adam``, ``history``); None where there is no usable file.

        A file that cannot be read, or that another config or structure wrote, warns and
        returns None, so the caller retrains and overwrites it.
        """
        path = self.path(config, modules, device)
        if not path.exists():
            return None
        try:
            saved = torch.load(path, map_location=device, weights_only=True)
            if json.loads(saved["meta"]) != self.metadata(config, modules, device):
                raise ValueError("stale: made by another config or network")
            for name, module in modules.items():
                module.load_state_dict(saved["weights"][name])
            return {k: saved[k] for k in ("pretrain_adam", "finetune_adam", "history")}
        except (
            OSError,
            KeyError,
            TypeError,
            ValueError,
            RuntimeError,
            EOFError,
            pickle.UnpicklingError,
        ) as error:
            warnings.warn(
                f"retraining: the cached weights at {path} cannot be used ({error})",
                stacklevel=3,
            )
            return None

    def save(
        self,
        config: TransferConfig,
        modules: Mapping[str, nn.Module],
        device: torch.device,
        **rest: Any,
    ) -> Path:
        """Store ``modules``' state dicts and ``rest`` (tensors, numbers, lists, dicts only)."""
        path = self.path(config, modules, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "meta": json.dumps(self.metadata(config, modules, device)),
                "weights": {name: m.state_dict() for name, m in modules.items()},
                **rest,
            },
            path,
        )
        return path
