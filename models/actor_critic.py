"""Policy and value networks for TF-Agents PPO, built from layer widths and TF-Agents' observation and action specs.

They are TF-Agents networks (tf_keras layers underneath), so TF-Agents' PPO losses and policies use them
as they are, and they save and restore through tf.train.Checkpoint.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf
from tf_agents.networks import actor_distribution_network, normal_projection_network, value_network

_ACTIVATIONS = {"tanh": tf.nn.tanh, "relu": tf.nn.relu, "elu": tf.nn.elu, "gelu": tf.nn.gelu}


def build_actor_and_value(cfg, obs_spec, action_spec, seed: int):
    """cfg: the gym task's model section (actor_layers, value_layers, activation, init_log_std). Orthogonal hidden
    initialisation (sqrt 2 gain), as in the PPO reference implementations."""
    activation = _ACTIVATIONS[cfg.activation]
    init = tf.keras.initializers.Orthogonal(gain=math.sqrt(2), seed=seed)
    # Softplus is TF-Agents' std transform: pick the bias that gives exp(init_log_std) at start.
    std = math.exp(cfg.init_log_std)
    normal_net = functools.partial(
        normal_projection_network.NormalProjectionNetwork,
        state_dependent_std=False,
        std_bias_initializer_value=math.log(math.expm1(std)),
        init_means_output_factor=0.01,
    )
    actor = actor_distribution_network.ActorDistributionNetwork(
        obs_spec,
        action_spec,
        fc_layer_params=tuple(cfg.actor_layers),
        activation_fn=activation,
        kernel_initializer=init,
        seed=seed,
        continuous_projection_net=normal_net,
        name="actor",
    )
    value = value_network.ValueNetwork(
        obs_spec,
        fc_layer_params=tuple(cfg.value_layers),
        activation_fn=activation,
        kernel_initializer=tf.keras.initializers.Orthogonal(gain=math.sqrt(2), seed=seed + 1),
        name="value",
    )
    actor.create_variables(obs_spec)
    value.create_variables(obs_spec)
    return actor, value


def parameter_count(net) -> int:
    return int(sum(np.prod(v.shape) for v in net.trainable_variables))
