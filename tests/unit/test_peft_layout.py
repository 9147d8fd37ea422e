"""LoRA adapters written in PEFT's layout (models/peft.py) and read back: the same model outputs, PEFT's tensor
names and shapes, and GPT-2's fused c_attn both ways."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file

from models import lora, peft
from tests.unit.test_lm_ppo import ARCHITECTURES, prompts
from tests.unit.test_lora import outputs

GPT2_TARGETS = (
    "query",
    "key",
    "value",
    "attention_output",
    "feedforward_intermediate_dense",
    "feedforward_output_dense",
)


def adapted(architecture: str, adapters: lora.Adapters, seed: int):
    lm = ARCHITECTURES[architecture]()
    for layer in lora.enable(lm, adapters):
        layer.lora_b.assign(tf.random.normal(layer.lora_b.shape, seed=seed))
    return lm


@pytest.mark.parametrize(
    "architecture, family, targets",
    [
        ("llama", "Llama 2 and 3", lora.TARGETS),
        ("gpt2", "GPT-2", GPT2_TARGETS),
        ("gpt2", "GPT-2", ("query", "value")),  # two of c_attn's three: a rank-2r block adapter
    ],
)
def test_adapters_written_in_peft_layout_read_back_equal(tmp_path, architecture, family, targets):
    adapters = lora.Adapters(rank=2, alpha=4.0, targets=targets)
    source = adapted(architecture, adapters, seed=1)
    peft.save(source, adapters, family, tmp_path / "adapter", base_model="/models/base")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["lora_alpha"] == 4.0
    if architecture == "llama":
        hidden = source.backbone.hidden_dim
        assert tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (2, hidden)
        assert "gate_proj" in config["target_modules"] and not config["fan_in_fan_out"]
    else:
        fused = [t for t in ("query", "key", "value") if t in targets]
        a = tensors["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"]
        b = tensors["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"]
        assert a.shape == (2 * len(fused), 32) and b.shape == (3 * 32, 2 * len(fused)) and config["fan_in_fan_out"]
        assert config["rank_pattern"] == {"c_attn": 2 * len(fused)} and config["alpha_pattern"]["c_attn"] == 4.0 * len(
            fused
        )
        # c_attn's adapter computes the separate ones': alpha'/r' (A'B') restricted to value's slice = alpha/r A_v B_v
        value = next(
            layer for layer in lora.adapted_layers(source) if layer.name == "value" and "layer_0/" in layer.lora_a.path
        )
        np.testing.assert_allclose(
            (a.T @ b.T)[:, 64:96], value.lora_a.numpy() @ value.lora_b.numpy(), rtol=1e-5, atol=1e-6
        )
    target = ARCHITECTURES[architecture]()
    lora.enable(target, adapters)
    ids = prompts(np.random.default_rng(3), batch=2)
    assert np.abs(outputs(target, ids) - outputs(source, ids)).max() > 1e-3  # B at zero: not yet the source
    peft.load(target, adapters, family, tmp_path / "adapter")
    np.testing.assert_allclose(outputs(target, ids), outputs(source, ids), atol=1e-5)


def test_peft_own_c_attn_adapter_shares_its_a_and_wrong_ranks_are_named(tmp_path):
    """PEFT's layout for GPT-2: one A over query, key and value. Read into three adapters, each gets that A and
    its slice of B; a rank that fits none of them is an error naming model.lora_rank."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 32)).astype(np.float32), rng.normal(size=(96, 2)).astype(np.float32)
    folder = tmp_path / "peft"
    folder.mkdir()
    save_file(
        {
            "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": a,
            "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight": b,
            "base_model.model.transformer.h.1.attn.c_attn.lora_A.weight": a,
            "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight": b,
        },
        str(folder / "adapter_model.safetensors"),
    )
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 8}))
    lm = ARCHITECTURES["gpt2"]()
    adapters = lora.Adapters(rank=2, alpha=2.0, targets=("query", "key", "value"))
    lora.enable(lm, adapters)
    peft.load(lm, adapters, "GPT-2", folder)
    for layer in lora.adapted_layers(lm):
        slot = ("query", "key", "value").index(layer.name)
        np.testing.assert_allclose(layer.lora_a.numpy(), a.T)
        np.testing.assert_allclose(layer.lora_b.numpy(), b.T[:, slot * 32 : (slot + 1) * 32] * 4.0)  # scale 8/2 vs 2/2
    wrong = lora.Adapters(rank=4, alpha=4.0, targets=("query",))
    other = ARCHITECTURES["gpt2"]()
    lora.enable(other, wrong)
    with pytest.raises(peft.PeftError, match="set model.lora_rank to 2"):
        peft.load(other, wrong, "GPT-2", folder)
