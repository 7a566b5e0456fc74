"""Checkpoints as one safetensors file: model and optimizer tensors, JSON state in its header.

Written to a temporary file and renamed, so an interrupted run never leaves half a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from postergenre.atomic import atomic_path

_STATE_KEY = "postergenre_state"


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{param_id}.{name}"] = value
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, values in info["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Save model weights, optimizer state and a JSON-serialisable `state` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opt_tensors, opt_info = _flatten_optimizer(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(opt_tensors)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {_STATE_KEY: json.dumps({"state": state, "optimizer": opt_info})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Restore weights (and optimizer state when given); returns the saved `state`."""
    model_tensors: dict[str, torch.Tensor] = {}
    opt_tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()[_STATE_KEY])
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
            if key.startswith("model."):
                model_tensors[key.removeprefix("model.")] = handle.get_tensor(key)
            else:
                opt_tensors[key] = handle.get_tensor(key)
    model.load_state_dict(model_tensors)
    if optimizer is not None:
        optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, header["optimizer"]))
    return header["state"]
