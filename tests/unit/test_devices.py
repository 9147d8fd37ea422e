"""The training stages log where the learner's variables live: the GPU when TensorFlow sees one, with no code change."""

from __future__ import annotations

import keras
import tensorflow as tf

from pipeline.core import config, devices
from pipeline.gym import envs
from pipeline.gym.ppo import PPOLearner
from pipeline.gym.rollout import Collector
from pipeline.gym.spaces import spaces_of


def expected_device() -> str:
    return "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"


def test_learner_variables_and_optimizer_slots_sit_on_the_default_device():
    expected = expected_device()
    cfg = config.from_dict(
        {
            "env": {"num_envs": 2},
            "model": {"actor_layers": [8], "value_layers": [8]},
            "train": {"rollout_steps": 4, "num_epochs": 1},
        }
    )
    env = envs.make_vector_env(cfg.env)
    learner = PPOLearner(cfg, spaces_of(env))
    learner.train_on_rollout(Collector(env, learner, 1.0, envs.episode_seeds(0, 2)).collect(4).arrays())
    assert devices.variable_devices(learner.variables_to_train) == [expected]
    assert devices.variable_devices(learner.optimizer.variables) == [expected]
    assert devices.describe(learner.variables_to_train).startswith(f"variables on {expected}; ")


def test_keras_3_variables_are_named_too():
    """The LM learner's variables are Keras 3 ones, which keep their tf.Variable in `.value`."""
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    assert devices.variable_devices(layer.trainable_variables) == [expected_device()]
