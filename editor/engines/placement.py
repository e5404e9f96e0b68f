"""Where a model's tensors are, also when accelerate placed it (``device_map``) and offloaded layers to disk.

An offloaded module keeps its weights on the meta device and carries an accelerate hook that reads them in
for its forward pass and drops them after. The project's own hooks are ordinary torch forward (pre-)hooks,
which run outside accelerate's (before its pre-forward, after its post-forward), so they see real inputs and
outputs. What needs care is code that reads a weight directly (attribution reads W_O and the unembedding)
or asks a parameter for the device inputs go to: these helpers answer both.
"""

from __future__ import annotations

from typing import Any

import torch


def execution_device(module: torch.nn.Module) -> torch.device:
    """The device ``module`` computes on: accelerate's execution device, else where its first parameter is."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    for param in module.parameters():
        if param.device.type != "meta":
            return param.device
    return torch.device("cpu")


def input_device(model: Any) -> torch.device:
    """Where token ids go: the input embedding's execution device."""
    return execution_device(model.get_input_embeddings())


def weight_of(module: torch.nn.Module, name: str = "weight") -> torch.Tensor | None:
    """``module.<name>`` as a real tensor (detached): read in from accelerate's offload when it is on meta."""
    tensor = getattr(module, name, None)
    if tensor is None or tensor.device.type != "meta":
        return None if tensor is None else tensor.detach()
    from accelerate.utils import align_module_device

    with align_module_device(module):
        return getattr(module, name).detach().clone()
