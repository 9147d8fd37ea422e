"""LoRA adapters (models.lora) in PEFT's file layout, for models of a Hugging Face checkpoint: a folder of
`adapter_config.json` and `adapter_model.safetensors` with PEFT's tensor names, which transformers + PEFT load onto
the base checkpoint (`PeftModel.from_pretrained`), and which a run can start its adapters from.

Tensor names are PEFT's for the module each keras-hub layer was converted from, `lora_A.weight` [r, in] and
`lora_B.weight` [out, r] (ours are their transposes). Llama, Mistral and Qwen have a module per projection.
GPT-2 fuses query, key and value into `attn.c_attn` ([in 768, out 3 x 768]); their adapters are written as one
c_attn adapter of rank r x (how many of the three are adapted): A side by side, B block-diagonal over the three
output slices, alpha scaled alike (`rank_pattern`, `alpha_pattern`), so it computes exactly what the three do.
Read back, a c_attn adapter of rank r shares its A among the three (PEFT's own layout), one of rank r x n is
split into its blocks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models import lora

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
# keras-hub layer name -> the Hugging Face module it was converted from, per family.
LLAMA_LIKE = {
    "query": "self_attn.q_proj",
    "key": "self_attn.k_proj",
    "value": "self_attn.v_proj",
    "attention_output": "self_attn.o_proj",
    "feedforward_gate_dense": "mlp.gate_proj",
    "feedforward_intermediate_dense": "mlp.up_proj",
    "feedforward_output_dense": "mlp.down_proj",
}
GPT2 = {
    "attention_output": "attn.c_proj",
    "feedforward_intermediate_dense": "mlp.c_fc",
    "feedforward_output_dense": "mlp.c_proj",
}
FUSED = ("query", "key", "value")  # GPT-2's c_attn, in its output order


class PeftError(ValueError):
    """A PEFT adapter folder does not fit the model or the adapters configured; the message says why."""


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / CONFIG).is_file() and (Path(path) / WEIGHTS).is_file()


def save(lm, adapters: lora.Adapters, family: str, directory: str | Path, base_model: str) -> Path:
    """Writes the adapters of `lm` (family: models.checkpoints' CheckpointInfo.family) in PEFT's layout."""
    from safetensors.numpy import save_file

    gpt2 = family == "GPT-2"
    tensors, ranks, alphas = {}, {}, {}

    def write(module: str, a, b) -> None:  # ours [in, r] and [r, out]; PEFT's their transposes
        tensors[f"{module}.lora_A.weight"] = np.ascontiguousarray(np.asarray(a, np.float32).T)
        tensors[f"{module}.lora_B.weight"] = np.ascontiguousarray(np.asarray(b, np.float32).T)

    for index, layers in sorted(_by_layer(lm).items()):
        prefix = _prefix(gpt2, index)
        fused = [t for t in FUSED if t in layers] if gpt2 else []
        for target, layer in layers.items():
            if target not in fused:
                write(prefix + _module(gpt2, target), layer.lora_a.numpy(), layer.lora_b.numpy())
        if fused:
            write(prefix + "attn.c_attn", *_fuse([layers[t] for t in fused], [FUSED.index(t) for t in fused]))
            if len(fused) > 1:
                ranks["c_attn"], alphas["c_attn"] = adapters.rank * len(fused), adapters.alpha * len(fused)
    modules = sorted({name.split(".lora_")[0].rsplit(".", 1)[-1] for name in tensors})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": adapters.rank,
        "lora_alpha": adapters.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": modules,
        "fan_in_fan_out": gpt2,  # GPT-2's Conv1D stores [in, out]
        "rank_pattern": ranks,
        "alpha_pattern": alphas,
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / WEIGHTS), metadata={"format": "pt"})
    (directory / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def load(lm, adapters: lora.Adapters, family: str, directory: str | Path) -> None:
    """Assigns a PEFT adapter folder's matrices to `lm`'s adapters (enabled with `adapters`). PEFT's scale
    (lora_alpha / r, per module where its patterns say) is folded into B where it differs from ours. PeftError
    when the folder lacks a module the adapters need or a shape does not fit."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    if not is_adapter_folder(directory):
        raise PeftError(f"{directory}: no {CONFIG} and {WEIGHTS} (a PEFT adapter folder)")
    config = json.loads((directory / CONFIG).read_text())
    if config.get("use_dora") or config.get("use_rslora"):
        raise PeftError(f"{directory}: DoRA and rsLoRA adapters are not supported; plain LoRA is")
    tensors = load_file(str(directory / WEIGHTS))
    gpt2, ours = family == "GPT-2", adapters.alpha / adapters.rank
    for index, layers in _by_layer(lm).items():
        prefix = _prefix(gpt2, index)
        for target, layer in layers.items():
            fused = gpt2 and target in FUSED
            module = "attn.c_attn" if fused else _module(gpt2, target)
            a, b = (tensors.get(f"{prefix}{module}.lora_{x}.weight") for x in "AB")
            if a is None or b is None:
                raise PeftError(f"{directory}: no adapter for {prefix}{module}, which model.lora_targets adapts")
            short = module.rsplit(".", 1)[-1]
            r = config.get("rank_pattern", {}).get(short, config["r"])
            scale = config.get("alpha_pattern", {}).get(short, config["lora_alpha"]) / r
            a, b = a.T, b.T * (scale / ours)  # ours: [in, r], [r, out]
            if fused:
                a, b = _unfuse(a, b, FUSED.index(target), adapters.rank, directory)
            if a.shape != tuple(layer.lora_a.shape) or b.shape != tuple(layer.lora_b.shape):
                raise PeftError(
                    f"{directory}: {prefix}{module} has A {a.shape[::-1]} and B {b.shape[::-1]}; this model's "
                    f"{target} needs rank {adapters.rank} ({tuple(layer.lora_a.shape)[::-1]}, "
                    f"{tuple(layer.lora_b.shape)[::-1]}): set model.lora_rank to the adapter's r"
                )
            layer.lora_a.assign(a)
            layer.lora_b.assign(b)


def _by_layer(lm) -> dict[int, dict]:
    """{transformer layer index: {target: adapted layer}}, the index read from the layer's variable path."""
    out: dict[int, dict] = {}
    for layer in lora.adapted_layers(lm):
        index = int(layer.lora_a.path.split("/")[0].rsplit("_", 1)[-1])
        out.setdefault(index, {})[layer.name] = layer
    return out


def _prefix(gpt2: bool, index: int) -> str:
    return f"base_model.model.transformer.h.{index}." if gpt2 else f"base_model.model.model.layers.{index}."


def _module(gpt2: bool, target: str) -> str:
    return (GPT2 if gpt2 else LLAMA_LIKE)[target]


def _fuse(layers, slots) -> tuple[np.ndarray, np.ndarray]:
    """One c_attn adapter computing what the query/key/value adapters compute: A [in, r n], B [r n, 3 out]."""
    a = np.concatenate([layer.lora_a.numpy() for layer in layers], axis=1)
    rank, width = layers[0].lora_b.shape
    b = np.zeros((rank * len(layers), 3 * width), np.float32)
    for k, (layer, slot) in enumerate(zip(layers, slots)):
        b[k * rank : (k + 1) * rank, slot * width : (slot + 1) * width] = layer.lora_b.numpy()
    return a, b


def _unfuse(a, b, slot: int, rank: int, directory) -> tuple[np.ndarray, np.ndarray]:
    """The query, key or value share of a c_attn adapter (A [in, r'], B [r', 3 out]), as rank-`rank` factors: the
    shared A where r' is the rank (PEFT's own layout), else the block whose B is non-zero in this slot."""
    width = b.shape[1] // 3
    b = b[:, slot * width : (slot + 1) * width]
    if a.shape[1] == rank:
        return a, b
    if a.shape[1] % rank == 0:
        blocks = [k for k in range(a.shape[1] // rank) if np.any(b[k * rank : (k + 1) * rank])]
        if len(blocks) <= 1:
            k = blocks[0] if blocks else 0
            return a[:, k * rank : (k + 1) * rank], b[k * rank : (k + 1) * rank]
    raise PeftError(
        f"{directory}: its c_attn adapter of rank {a.shape[1]} cannot be split into rank-{rank} query, key and "
        f"value adapters; set model.lora_rank to {a.shape[1]}"
    )
