"""The networks LM PPO holds, and their forward passes over a batch's responses: the trainable policy, the value
model (a head on the policy's trunk, or a separate copy of the SFT model with a head) and the frozen reference.

With LoRA the value model is by default a head on the adapted trunk (ppo.value_model shared), as without: one network
in memory, which is what LoRA is for; separate gives the value model a base copy with adapters of its own (TRL's
layout, twice the memory and compute). The reference is then the policy with its adapters off, not a copy.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from models import lm as lm_lib
from models import lora
from pipeline.lm.config import LMPPOConfig


class PolicyNetworks:
    def __init__(self, policy_lm, settings: LMPPOConfig, adapters: lora.Adapters | None = None):
        """Build under the strategy's scope, if any: the reference and value model are mirrored on its replicas.
        grpo and rloo have no value model; with beta 0 they have no reference either (no copy in memory)."""
        s = self.settings = settings
        self.policy, self.adapters = policy_lm, adapters
        self.has_values = s.algorithm == "ppo"
        self.has_reference = s.algorithm == "ppo" or s.beta > 0
        self.reference = (
            None
            if adapters is not None or not self.has_reference
            else lm_lib.copy_lm(
                policy_lm,
                trainable=False,
                precision=None if s.reference_precision == "policy" else s.reference_precision,
            )
        )
        separate = self.has_values and s.value_model == "separate"
        self.value_trunk = lm_lib.copy_lm(policy_lm, trainable=True) if separate else None
        if adapters is not None:
            for lm in (self.policy, self.value_trunk):
                if lm is not None:
                    lora.enable(lm, adapters)
        self.value_head = lm_lib.build_value_head(policy_lm.backbone.hidden_dim) if self.has_values else None
        self.filtered = bool(s.top_k) or s.top_p < 1.0
        self.variables = self.policy.trainable_variables + [
            v for part in (self.value_head, self.value_trunk) if part is not None for v in part.trainable_variables
        ]

    def trained(self) -> dict:
        parts = {"value_head": self.value_head} if self.value_head is not None else {}
        for name, lm in (("policy", self.policy), ("value_trunk", self.value_trunk)):
            if lm is not None:
                parts[name] = lm if self.adapters is None else lora.adapter_variables(lm)
        return parts

    def attach_reference(self, reference_lm) -> None:
        """For evaluation after training without a reference (grpo or rloo with beta 0): the SFT model, rebuilt."""
        self.reference = reference_lm

    @contextlib.contextmanager
    def as_reference(self):
        """The frozen reference: its own copy, or the policy with its adapters off (while tracing, too)."""
        if self.reference is not None:
            yield self.reference
        elif self.adapters is not None:
            with lora.adapters_off(self.policy) as reference:
                yield reference
        else:
            raise RuntimeError("no reference model in memory (beta 0): attach_reference first")

    def servable_policy(self):
        """The policy as one model for the export: with adapters, a copy with them merged into its kernels."""
        return self.policy if self.adapters is None else lm_lib.copy_lm(self.policy, trainable=False)

    def response_hidden(self, lm, sequences, prompt_lengths):
        """The hidden states [B, R, H] at the positions that predict each response token."""
        positions = lm_lib.response_positions(prompt_lengths, self.settings.max_new_tokens) - 1
        return tf.gather(lm_lib.hidden_states(lm, sequences), positions, batch_dims=1)

    def response_logits(self, lm, sequences, prompt_lengths):
        """Raw logits at each response position (what predicts each response token), and the hidden states there."""
        hidden = self.response_hidden(lm, sequences, prompt_lengths)
        # The LM head only where a response token is predicted: a third of its work is the prompt's otherwise.
        return lm.backbone.token_embedding(hidden, reverse=True), hidden

    def values(self, sequences, policy_hidden, prompt_lengths):
        """[B, R] values; zeros without a value model (grpo, rloo)."""
        if self.value_head is None:
            return tf.zeros(tf.shape(policy_hidden)[:2], tf.float32)
        hidden = (
            policy_hidden
            if self.value_trunk is None
            else self.response_hidden(self.value_trunk, sequences, prompt_lengths)
        )
        return tf.cast(self.value_head(hidden)[..., 0], tf.float32)

    def policy_outputs(self, sequences, prompt_lengths, kept):
        """Response log-probs, values and per-token entropies under the policy's sampling distribution (renormalised
        over the batch's kept sets when sampling is filtered)."""
        logits, hidden = self.response_logits(self.policy, sequences, prompt_lengths)
        tokens = lm_lib.responses(sequences, prompt_lengths, self.settings.max_new_tokens)
        log_probs, entropy = lm_lib.log_probs_and_entropy(logits, tokens, self.settings.temperature, kept)
        return log_probs, self.values(sequences, hidden, prompt_lengths), entropy

    def score(self, sequences, prompt_lengths):
        """(policy log-probs, values, reference log-probs, kept sets) before an update.

        Filtered sampling: the kept sets are the policy's top-k / top-p sets, plus each drawn token; the
        reference is scored on them, renormalised, not under a filter of its own (a token the policy kept but
        the reference would have cut would otherwise get a log-probability of ~ -1e9). None when unfiltered.
        """
        s = self.settings
        tokens = lm_lib.responses(sequences, prompt_lengths, s.max_new_tokens)
        logits, hidden = self.response_logits(self.policy, sequences, prompt_lengths)
        kept = lm_lib.kept_tokens(logits, tokens, s.temperature, s.top_k, s.top_p) if self.filtered else None
        log_probs = lm_lib.token_log_probs(logits, tokens, s.temperature, kept)
        if self.has_reference:
            reference_log_probs = self.reference_log_probs(sequences, prompt_lengths, kept)
        else:  # nothing reads them: the policy's own, a KL of zero
            reference_log_probs = log_probs
        return log_probs, self.values(sequences, hidden, prompt_lengths), reference_log_probs, kept

    def reference_log_probs(self, sequences, prompt_lengths, kept=None):
        tokens = lm_lib.responses(sequences, prompt_lengths, self.settings.max_new_tokens)
        with self.as_reference() as reference:
            reference_logits, _ = self.response_logits(reference, sequences, prompt_lengths)
        return lm_lib.token_log_probs(reference_logits, tokens, self.settings.temperature, kept)
