"""Policy and value networks for TF-Agents PPO, built from the model config and the environment's spaces.

They are TF-Agents networks (tf_keras layers underneath), so TF-Agents' PPO losses and policies use them
as they are, and they save and restore through tf.train.Checkpoint.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf
from tf_agents.networks import actor_distribution_network, normal_projection_network, value_network
from tf_agents.specs import tensor_spec

from pipeline.config import ModelConfig
from pipeline.envs import Spaces

_ACTIVATIONS = {"tanh": tf.nn.tanh, "relu": tf.nn.relu, "elu": tf.nn.elu, "gelu": tf.nn.gelu}


def specs(spaces: Spaces):
    """(observation_spec, action_spec) as TF-Agents tensor specs."""
    obs_spec = tensor_spec.BoundedTensorSpec(
        spaces.observation_shape, tf.float32,
        minimum=np.maximum(spaces.observation_low, np.finfo(np.float32).min),
        maximum=np.minimum(spaces.observation_high, np.finfo(np.float32).max), name="observation")
    if spaces.discrete:
        action_spec = tensor_spec.BoundedTensorSpec((), tf.int64, 0, spaces.num_actions - 1, name="action")
    else:
        action_spec = tensor_spec.BoundedTensorSpec(spaces.action_shape, tf.float32, spaces.action_low,
                                                    spaces.action_high, name="action")
    return obs_spec, action_spec


def build_actor_and_value(cfg: ModelConfig, obs_spec, action_spec, seed: int):
    """Orthogonal hidden initialisation (sqrt 2 gain), as in the PPO reference implementations."""
    activation = _ACTIVATIONS[cfg.activation]
    init = tf.keras.initializers.Orthogonal(gain=math.sqrt(2), seed=seed)
    # Softplus is TF-Agents' std transform: pick the bias that gives exp(init_log_std) at start.
    std = math.exp(cfg.init_log_std)
    normal_net = functools.partial(
        normal_projection_network.NormalProjectionNetwork, state_dependent_std=False,
        std_bias_initializer_value=math.log(math.expm1(std)), init_means_output_factor=0.01)
    actor = actor_distribution_network.ActorDistributionNetwork(
        obs_spec, action_spec, fc_layer_params=tuple(cfg.actor_layers), activation_fn=activation,
        kernel_initializer=init, seed=seed, continuous_projection_net=normal_net, name="actor")
    value = value_network.ValueNetwork(
        obs_spec, fc_layer_params=tuple(cfg.value_layers), activation_fn=activation,
        kernel_initializer=tf.keras.initializers.Orthogonal(gain=math.sqrt(2), seed=seed + 1), name="value")
    actor.create_variables(obs_spec)
    value.create_variables(obs_spec)
    return actor, value


def parameter_count(net) -> int:
    return int(sum(np.prod(v.shape) for v in net.trainable_variables))
