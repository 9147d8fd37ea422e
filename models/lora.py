"""LoRA adapters on a keras-hub causal LM, shaped as PEFT shapes them, for RL fine-tuning.

- Each adapted projection gets rank-r factors of its whole matrix, as PEFT's nn.Linear adapters: A [in, r] and
  B [r, out], where `in` and `out` flatten the kernel's input and output axes (keras-hub's query kernel
  [hidden, heads, head_dim]: A [hidden, r], B [r, heads * head_dim]). r * (in + out) parameters each, PEFT's count.
  keras-hub's own `enable_lora` factors the heads axis apart ([hidden, heads, r] and [r, head_dim]): three times
  PEFT's parameters on GPT-2's query, and it adds A.B to the kernel on every call.
- The forward pass computes x.A.B beside x.W (scaled alpha / r), never W + A.B: the adapters cost two thin
  matmuls, not a kernel-sized one. A starts as PEFT's (uniform in +-1/sqrt(in)), B at zero: the adapted model
  starts exactly as the base.
- The reference is the same network with its adapters off (`adapters_off`), not a second copy of the weights: each
  adapted layer reads its switch when it is called, so a function traced inside `adapters_off` stays base-only for
  good, and one traced outside it uses the adapters.
- Only the adapters train; the adapted layers' biases (GPT-2's and Qwen 2's query and value have them) stay frozen,
  as PEFT's default (bias="none") leaves them; the base, biases included, is then exactly the reference.
- The adapters are checkpointed apart from the base (`adapter_variables`): a checkpoint holds megabytes, not the
  model. `merged_own_variables` gives a layer's weights with its adapters merged, for the export's copy
  (`models.lm.copy_lm`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

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
    """What to adapt: rank, scale numerator (the update is alpha / rank * x.A.B) and the layers' names."""

    rank: int
    alpha: float
    targets: tuple[str, ...] = ("query", "value")


def unavailable_targets(family: str, targets) -> list[str]:
    """The targets an architecture family (models.checkpoints' CheckpointInfo.family) does not have."""
    return [t for t in targets if t in NOT_IN.get(family, ())]


def enable(lm, adapters: Adapters) -> list:
    """Adds adapters to the layers `adapters` names, every other weight frozen; returns the adapted layers."""
    import keras  # here, not at the top: the config imports TARGETS, and a config error should not wait for Keras

    backbone = lm.backbone
    backbone.trainable = True
    for layer in backbone._flatten_layers(include_self=False):
        layer.trainable = False  # every weight frozen (Keras sets each variable's flag)
    layers = [
        layer
        for layer in backbone._flatten_layers(include_self=False)
        if layer.name in adapters.targets and isinstance(layer, (keras.layers.EinsumDense, keras.layers.Dense))
    ]
    missing = sorted(set(adapters.targets) - {layer.name for layer in layers})
    if missing:
        raise ValueError(f"no layer named {', '.join(missing)} in this {type(backbone).__name__} to adapt")
    for layer in layers:
        _adapt(layer, adapters)
    return layers


def adapted_layers(lm) -> list:
    return [layer for layer in lm.backbone._flatten_layers(include_self=False) if isinstance(layer, _Adapted)]


def adapter_variables(lm) -> dict:
    """{path: variable} of every adapter matrix, for a checkpoint that keeps them apart from the base."""
    return {v.path: v for layer in adapted_layers(lm) for v in (layer.lora_a, layer.lora_b)}


@contextlib.contextmanager
def adapters_off(lm):
    """Inside this block (while calling or tracing), the model computes its base weights only."""
    layers = adapted_layers(lm)
    for layer in layers:
        layer.adapters_on = False
    try:
        yield lm
    finally:
        for layer in layers:
            layer.adapters_on = True


def merged_own_variables(layer) -> dict:
    """What `layer.save_own_variables` stores, with an adapted layer's kernel replaced by W + alpha / r * A.B
    (reshaped to the kernel's axes: the kernel's input axes come first, its output axes last)."""
    from keras import ops

    store = {}
    layer.save_own_variables(store)
    if isinstance(layer, _Adapted):
        delta = layer.lora_scale * ops.matmul(layer.lora_a, layer.lora_b)
        store["0"] = ops.convert_to_numpy(ops.add(store["0"], ops.reshape(delta, layer.kernel.shape)))
    return store


class _Adapted:
    """Mixed in before an adapted layer's own class (EinsumDense or Dense): its call adds x.A.B."""

    def call(self, inputs, training=None):
        import keras
        from keras import ops

        if isinstance(self, keras.layers.EinsumDense):
            x = ops.einsum(self.equation, inputs, self.kernel)
        else:
            x = ops.matmul(inputs, self.kernel)
        if self.adapters_on:
            # Rows of 2-D matmuls: Keras' matmul of a [B, T, in] input is a tensordot, ~15 shape ops per call and
            # twice that in its gradient, which made the adapted models' update graphs a third larger.
            dtype = self.compute_dtype
            flat = ops.reshape(inputs, (-1, self.lora_a.shape[0]))
            low_rank = ops.multiply(ops.matmul(flat, ops.cast(self.lora_a, dtype)), ops.cast(self.lora_scale, dtype))
            x = ops.add(x, ops.reshape(ops.matmul(low_rank, ops.cast(self.lora_b, dtype)), ops.shape(x)))
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


_CLASSES: dict = {}


def _adapt(layer, adapters: Adapters) -> None:
    """Adds A and B to a built layer and gives it _Adapted's call; its kernel and bias stay frozen."""
    import keras

    input_axes = _input_axes(layer)
    shape = tuple(layer.kernel.shape)
    fan_in, fan_out = math.prod(shape[:input_axes]), math.prod(shape[input_axes:])
    layer.trainable = True
    for variable in (layer._kernel, layer.bias):
        if variable is not None:
            variable.trainable = False
    layer._tracker.unlock()
    bound = 1.0 / math.sqrt(fan_in)  # PEFT's A: kaiming_uniform(a=sqrt(5)) on [r, in]
    layer.lora_a = layer.add_weight(
        name="lora_a",
        shape=(fan_in, adapters.rank),
        initializer=keras.initializers.RandomUniform(-bound, bound),
        dtype="float32",
    )
    layer.lora_b = layer.add_weight(name="lora_b", shape=(adapters.rank, fan_out), initializer="zeros", dtype="float32")
    layer._tracker.lock()
    layer.lora_scale, layer.adapters_on = adapters.alpha / adapters.rank, True
    cls = type(layer)
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Adapted{cls.__name__}", (_Adapted, cls), {})
    layer.__class__ = _CLASSES[cls]


def _input_axes(layer) -> int:
    """How many of the kernel's leading axes the input contracts (Dense: 1). The adapter flattens the input's
    last that-many axes and reshapes x.A.B to the output's: both must be the kernel's axes in its order."""
    import keras

    if isinstance(layer, keras.layers.Dense):
        return 1
    inputs, rest = layer.equation.split(",")
    kernel, output = rest.split("->")
    contracted = [axis for axis in kernel if axis in inputs and axis not in output]
    produced = [axis for axis in kernel if axis not in contracted]
    if (
        kernel != "".join(contracted + produced)
        or not inputs.endswith("".join(contracted))
        or not output.endswith("".join(produced))
    ):
        raise ValueError(f"cannot adapt {layer.name}: its equation {layer.equation} is not x[..., in] W[in, out]")
    return len(contracted)
