"""Reward model for RLHF: a keras-hub GPT-2 backbone and a scalar head read at each sequence's last real token.

The backbone starts as a copy of the SFT model's (InstructGPT's and TRL's practice): it already reads the
corpus's text, so a few thousand preference pairs only have to teach the head, and nudge the backbone, what is
preferred. Built from keras-hub's constructor (via `from_config`); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses

import keras
import keras_hub
import tensorflow as tf

from models import lm as lm_lib


@dataclasses.dataclass
class RewardModel:
    backbone: keras_hub.models.GPT2Backbone
    head: keras.layers.Dense
    # Output normalisation, (raw - offset) / scale, fitted after training so that rewards of the SFT model's
    # samples have mean 0 and std 1 (Ziegler et al. 2019): PPO's kl_coef then weighs the same whatever scale
    # the Bradley-Terry fit chose (the loss is blind to a shift and only weakly tied to a scale).
    offset: tf.Variable
    scale: tf.Variable

    @property
    def trainable_variables(self) -> list:
        return self.backbone.trainable_variables + self.head.trainable_variables

    def checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(backbone=self.backbone, head=self.head, offset=self.offset, scale=self.scale)


def from_sft(lm: keras_hub.models.GPT2CausalLM, seed: int = 0) -> RewardModel:
    """A trainable copy of the SFT model's backbone (its weights, not shared variables) plus a new scalar head."""
    backbone = lm_lib.copy_lm(lm, trainable=True).backbone
    head = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed=seed), name="reward_head")
    head.build((None, backbone.hidden_dim))
    return RewardModel(
        backbone,
        head,
        tf.Variable(0.0, trainable=False, name="reward_offset"),
        tf.Variable(1.0, trainable=False, name="reward_scale"),
    )


def last_token_index(padding_mask):
    """[B] position of each row's last real token (the EOS where there is one): the one that has read it all."""
    mask = tf.cast(padding_mask, tf.int32)
    return tf.reduce_max(mask * tf.range(tf.shape(mask)[1])[None, :], axis=1)


def raw_rewards(model: RewardModel, token_ids, padding_mask):
    """[B] head outputs at the last real token, before normalisation (what the Bradley-Terry loss trains)."""
    hidden = model.backbone({"token_ids": token_ids, "padding_mask": padding_mask})
    last = tf.gather(hidden, last_token_index(padding_mask), axis=1, batch_dims=1)
    return model.head(last)[:, 0]


def rewards(model: RewardModel, token_ids, padding_mask):
    """[B] normalised rewards: what PPO maximises."""
    return (raw_rewards(model, token_ids, padding_mask) - model.offset) / model.scale
