"""The decoding cache shared by the recurrent layers (the convention of :class:`~everygraph.nn.Mamba`
and ``mamba_ssm``: one entry per ``layer_idx`` in ``inference_params.key_value_memory_dict``)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


def decoding_cache(layer: nn.Module, inference_params: Any, batch_size: int) -> tuple[Tensor, ...] | Tensor:
    """The layer's cache entry in ``inference_params.key_value_memory_dict`` (allocated on first
    use), checked against the batch size."""
    if not (hasattr(inference_params, "key_value_memory_dict") and hasattr(inference_params, "seqlen_offset")):
        raise TypeError("inference_params must have seqlen_offset and key_value_memory_dict (an InferenceParams), "
                        f"got {type(inference_params).__name__}")
    if layer.layer_idx is None:
        raise ValueError(f"decoding with inference_params needs the layer's layer_idx (its key in "
                         f"inference_params.key_value_memory_dict): pass {type(layer).__name__}(..., layer_idx=i)")
    memory = inference_params.key_value_memory_dict
    if layer.layer_idx not in memory:
        memory[layer.layer_idx] = layer.allocate_inference_cache(batch_size, getattr(inference_params, "max_seqlen", 0))
    entry = memory[layer.layer_idx]
    first = entry[0] if isinstance(entry, tuple) else entry
    if first.shape[0] != batch_size:
        raise ValueError(f"the cache of layer {layer.layer_idx} holds {first.shape[0]} rows, this call has batch size {batch_size}")
    return entry
