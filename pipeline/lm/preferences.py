"""Preference pairs for the reward model: read from JSONL, or built by ranking two SFT samples with a scorer.

JSONL: one object per line with `prompt`, `chosen` and `rejected` strings (TRL's explicit-prompt format). Other
keys are ignored, so the pairs a run builds (written with their scores) can be read back by another run.
In token form a pair is two sequences, prompt + chosen and prompt + rejected, each with its padding mask.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from models import lm as lm_lib
from pipeline.core.rundir import write_atomic
from pipeline.lm import data as data_lib

KEYS = ("prompt", "chosen", "rejected")


class PreferenceError(ValueError):
    """A preference file cannot be read; the message names file:line and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Preference:
    prompt: str
    chosen: str
    rejected: str


@dataclasses.dataclass
class PreferencePairs:
    """Token form, one row per pair; chosen and rejected padded to the same length."""

    chosen_ids: np.ndarray  # [N, T] prompt + chosen completion
    chosen_mask: np.ndarray  # [N, T] 1 for real tokens
    rejected_ids: np.ndarray
    rejected_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.chosen_ids)

    def arrays(self) -> tuple:
        return self.chosen_ids, self.chosen_mask, self.rejected_ids, self.rejected_mask

    def take(self, index) -> PreferencePairs:
        return PreferencePairs(*(a[index] for a in self.arrays()))

    def split(self, fraction: float, seed: int) -> tuple[PreferencePairs, PreferencePairs]:
        """(train, held out) after a seeded shuffle; at least one pair is held out."""
        order = np.random.default_rng(seed).permutation(len(self))
        held_out = max(1, int(len(self) * fraction))
        return self.take(order[held_out:]), self.take(order[:held_out])


def read_preferences(path: str | Path) -> list[Preference]:
    path = Path(path)
    if not path.is_file():
        raise PreferenceError(f"{path}: no such file (expected JSONL with {', '.join(KEYS)} strings on each line)")
    preferences = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise PreferenceError(f"{path}:{number}: not JSON ({e})") from None
        if not isinstance(row, dict):
            raise PreferenceError(f"{path}:{number}: expected a JSON object with {', '.join(KEYS)}, got {row!r:.60}")
        for key in KEYS:
            if key not in row:
                raise PreferenceError(f"{path}:{number}: missing key {key!r} (each line needs {', '.join(KEYS)})")
            if not isinstance(row[key], str):
                raise PreferenceError(f"{path}:{number}: {key!r} must be a string, got {row[key]!r:.60}")
        preferences.append(Preference(*(row[key] for key in KEYS)))
    if not preferences:
        raise PreferenceError(f"{path}: no preference pairs in it")
    return preferences


def write_preferences(path: Path, preferences: list[Preference], chosen_scores, rejected_scores) -> None:
    """JSONL that read_preferences reads back; the scores that ranked each pair ride along for inspection."""
    rows = [
        json.dumps({**dataclasses.asdict(p), "chosen_score": float(c), "rejected_score": float(r)})
        for p, c, r in zip(preferences, chosen_scores, rejected_scores)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(row + "\n" for row in rows))


def encode(
    tokenizer, preferences: list[Preference], sequence_length: int, start_id: int | None = None
) -> PreferencePairs:
    """Prompt + completion as one text, tokenised with an EOS (and the start token where the model's convention
    has one) and cut or padded, as TRL's reward trainer joins them."""
    chosen = data_lib.encode_documents(tokenizer, [p.prompt + p.chosen for p in preferences], sequence_length, start_id)
    rejected = data_lib.encode_documents(
        tokenizer, [p.prompt + p.rejected for p in preferences], sequence_length, start_id
    )
    return PreferencePairs(*chosen, *rejected)


def join(prompt_ids: np.ndarray, responses: np.ndarray, eos_id: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's prompt (right-padded with EOS: up to its first EOS) and its response, one after the other, and
    the mask the reward model reads them with: it ends at the response's first EOS. Laid out as `encode` lays out
    a preference file's texts and as the policy sampled them (no gap, so positions match)."""
    prompt_ids, responses = np.asarray(prompt_ids, np.int32), np.asarray(responses, np.int32)
    response_mask = lm_lib.response_mask(tf.constant(responses), eos_id).numpy().astype(np.int32)
    lengths = (
        data_lib.prompt_lengths(prompt_ids, eos_id)
        if eos_id is not None
        else np.full(len(prompt_ids), prompt_ids.shape[1])
    )
    width = prompt_ids.shape[1] + responses.shape[1]
    ids = np.full((len(prompt_ids), width), eos_id or 0, np.int32)
    mask = np.zeros((len(prompt_ids), width), np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = prompt_ids[row, :length]
        ids[row, length : length + responses.shape[1]] = responses[row]
        mask[row, :length] = 1
        mask[row, length : length + responses.shape[1]] = response_mask[row]
    return ids, mask


# === Pairs from SFT samples ===


class RankedSamples(NamedTuple):
    """Two sampled responses per prompt, ranked by a scorer; prompts whose two scores tie are left out."""

    prompts: np.ndarray  # [N, P]
    chosen: np.ndarray  # [N, R] the higher-scored response
    rejected: np.ndarray  # [N, R]
    chosen_scores: np.ndarray  # [N]
    rejected_scores: np.ndarray
    sampled: int  # prompts sampled, ties included

    def token_pairs(self, eos_id: int | None) -> PreferencePairs:
        return PreferencePairs(*join(self.prompts, self.chosen, eos_id), *join(self.prompts, self.rejected, eos_id))

    def preferences(self, decode: Callable[[np.ndarray], list[str]]) -> list[Preference]:
        return [Preference(*texts) for texts in zip(decode(self.prompts), decode(self.chosen), decode(self.rejected))]


def rank(prompts, first, second, first_scores, second_scores) -> RankedSamples:
    """chosen = the response with the higher score; a tie says nothing about preference and is dropped."""
    first_scores, second_scores = np.asarray(first_scores, np.float32), np.asarray(second_scores, np.float32)
    keep = first_scores != second_scores
    first_wins = (first_scores > second_scores)[:, None]
    return RankedSamples(
        np.asarray(prompts)[keep],
        np.where(first_wins, first, second)[keep],
        np.where(first_wins, second, first)[keep],
        np.maximum(first_scores, second_scores)[keep],
        np.minimum(first_scores, second_scores)[keep],
        len(keep),
    )


def sample_ranked(
    generate, score, prompts: np.ndarray, wanted: int, batch_size: int, seed: int, max_prompts: int
) -> RankedSamples:
    """Samples two responses for batches of prompts and ranks them until `wanted` untied pairs are found (or
    max_prompts were sampled). generate(prompt_ids, round) -> responses; score(prompt rows, responses) -> [B], the
    rows indexing `prompts` (and their columns). Prompts are drawn by (seed, round), so a re-run builds the same
    pairs."""
    parts, sampled, found = [], 0, 0
    while found < wanted and sampled < max_prompts:
        rng = np.random.default_rng([seed, len(parts)])
        rows = rng.choice(len(prompts), batch_size, replace=len(prompts) < batch_size)
        batch = prompts[rows]
        responses = np.asarray(generate(np.concatenate([batch, batch]), len(parts)))
        first, second = responses[:batch_size], responses[batch_size:]
        parts.append(rank(batch, first, second, score(rows, first), score(rows, second)))
        sampled, found = sampled + batch_size, found + len(parts[-1].prompts)
    fields = RankedSamples._fields[:-1]  # every array; `sampled` is the total
    return RankedSamples(*(np.concatenate([getattr(p, f) for p in parts])[:wanted] for f in fields), sampled=sampled)
