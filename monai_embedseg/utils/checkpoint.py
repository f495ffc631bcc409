"""Loading network weights with errors that say what is wrong with the file."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["load_weights"]


def load_weights(
    network: torch.nn.Module, path: str | Path, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load a state dict (bare, or under ``"model"`` as ``CheckpointSaver`` writes it) into ``network``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a PyTorch checkpoint, or it belongs to another network (missing, unexpected
            or differently shaped parameters are listed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle / zip errors differ between torch versions
        raise ValueError(f"checkpoint {path} cannot be read as a PyTorch checkpoint: {e}") from e
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict.")
    target = network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
            if keys
        )
        raise ValueError(f"checkpoint {path} is not a checkpoint of this {type(target).__name__} ({detail}).")
    target.load_state_dict(state)
    return network
