"""LoRA adapters on a keras-hub causal LM, for PPO: keras-hub's `enable_lora`, plus what RLHF needs around it.

- The reference is the same network with its adapters off (`adapters_off`), not a second copy of the weights.
  keras-hub has no switch: each adapted layer reads its `lora_enabled` flag when it is called, so a function
  traced inside `adapters_off` stays base-only for good, and one traced outside it uses the adapters.
- Only the adapters train: `enable_lora` makes the adapted layers' biases trainable again (GPT-2's and Qwen 2's
  query and value have biases), so they are frozen here, as PEFT's default (bias="none") does; the base model,
  biases included, is then exactly the reference.
- The adapters are checkpointed apart from the base (`adapter_variables`): a PPO checkpoint holds megabytes,
  not the model, and a resume continues the same adapters. Keras' `save_weights` would merge them into the
  kernels; `models.lm.copy_lm` does the same merge on purpose, for the export.
"""

from __future__ import annotations

import contextlib
import dataclasses

# Layers of keras-hub's GPT-2, Llama, Mistral and Qwen backbones that can take adapters (their names there).
TARGETS = (
    "query",
    "key",
    "value",
    "attention_output",
    "feedforward_gate_dense",
    "feedforward_intermediate_dense",
    "feedforward_output_dense",
)
NOT_IN = {"GPT-2": ("feedforward_gate_dense",)}  # GPT-2's feed-forward block has no gate


@dataclasses.dataclass(frozen=True)
class Adapters:
    """What to adapt: rank, scale numerator (the update is alpha / rank * A @ B) and the layers' names."""

    rank: int
    alpha: float
    targets: tuple[str, ...] = ("query", "value")


def unavailable_targets(family: str, targets) -> list[str]:
    """The targets an architecture family (models.checkpoints' CheckpointInfo.family) does not have."""
    return [t for t in targets if t in NOT_IN.get(family, ())]


def enable(lm, adapters: Adapters) -> list:
    """Adds adapters to the layers `adapters` names, every other weight frozen; returns the adapted layers.
    B starts at zero, so the adapted model computes exactly what the base does."""
    lm.backbone.enable_lora(adapters.rank, target_layer_names=list(adapters.targets))
    layers = adapted_layers(lm)
    missing = sorted(set(adapters.targets) - {layer.name for layer in layers})
    if missing:
        raise ValueError(f"no layer named {', '.join(missing)} in this {type(lm.backbone).__name__} to adapt")
    for layer in layers:
        layer.lora_alpha = adapters.alpha
        if getattr(layer, "bias", None) is not None:
            layer.bias.trainable = False
    return layers


def adapted_layers(lm) -> list:
    return [layer for layer in lm.backbone._flatten_layers(include_self=False) if getattr(layer, "lora_enabled", False)]


def adapter_variables(lm) -> dict:
    """{path: variable} of every adapter matrix, for a checkpoint that keeps them apart from the base."""
    return {v.path: v for layer in adapted_layers(lm) for v in (layer.lora_kernel_a, layer.lora_kernel_b)}


@contextlib.contextmanager
def adapters_off(lm):
    """Inside this block (while calling or tracing), the model computes its base weights only."""
    layers = adapted_layers(lm)
    for layer in layers:
        layer.lora_enabled = False
    try:
        yield lm
    finally:
        for layer in layers:
            layer.lora_enabled = True
