"""Greedy decoding checked as a property that holds on every machine.

Two correct implementations (a KV cache and a full forward pass, an export and the in-process model, kernels
with and without oneDNN) agree on logits only to rounding, so at a near-tie their argmax can differ and the rest
of the decode with it. What holds everywhere: every token a greedy decoder chose is, under the reference
computation, within a small tolerance of its position's best logit. A wrong tokenizer, a stale cache position
or a missing piece of the model still fails that (its tokens are far from the best, not a rounding error away).
"""

from __future__ import annotations

import numpy as np

# Logits of the tiny test models are O(1-10); kernels differ by ~1e-5 in them. A wrong token is ~0.1 or more away.
TIE_TOLERANCE = 1e-3


def assert_near_greedy(full_logits, sequence, start: int, end: int | None = None, tol: float = TIE_TOLERANCE):
    """full_logits: [T, V] logits of `sequence` (a full forward pass); tokens start..end were chosen greedily."""
    end = len(sequence) if end is None else end
    for t in range(start, end):
        best, chosen = float(np.max(full_logits[t - 1])), float(full_logits[t - 1][sequence[t]])
        assert chosen >= best - tol, (
            f"position {t}: token {sequence[t]} has logit {chosen:.6f}, the best "
            f"{int(np.argmax(full_logits[t - 1]))} has {best:.6f}"
        )


def near_greedy_path_exists(
    next_logits,
    prompt_ids: list[int],
    text: str,
    detokenize,
    eos_id: int,
    max_new_tokens: int,
    tol: float = TIE_TOLERANCE,
) -> bool:
    """Whether a greedy decoder that may break near-ties either way can write `text` after `prompt_ids`.

    next_logits(ids) -> [V] logits of the next token. A path ends at an EOS (not part of the text) or after
    max_new_tokens tokens, and picks at every step a token within tol of the best logit.
    """

    def search(ids: list[int]) -> bool:
        written = detokenize(ids[len(prompt_ids) :])
        if not text.startswith(written):
            return False
        generated = len(ids) - len(prompt_ids)
        if written == text and generated == max_new_tokens:
            return True
        if generated == max_new_tokens:
            return False
        logits = np.asarray(next_logits(ids), np.float64)
        candidates = np.flatnonzero(logits >= logits.max() - tol)
        if written == text and eos_id in candidates:
            return True
        return any(search(ids + [int(c)]) for c in candidates if c != eos_id)

    return search(list(prompt_ids))
