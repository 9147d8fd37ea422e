"""Policy and value networks for TF-Agents PPO, built from layer widths and TF-Agents' observation and action specs.

They are TF-Agents networks (tf_keras layers underneath), so TF-Agents' PPO losses and policies use them
as they are, and they save and restore through tf.train.Checkpoint.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.networks import (
    actor_distribution_network,
    categorical_projection_network,
    network,
    normal_projection_network,
    value_network,
)

from models import encoders

_ACTIVATIONS = {"tanh": tf.nn.tanh, "relu": tf.nn.relu, "elu": tf.nn.elu, "gelu": tf.nn.gelu}


def build_actor_and_value(cfg, obs_spec, action_spec, seed: int, parts=None, is_dict=False, mask_key=None, values=None):
    """cfg: the gym task's model section (actor_layers, value_layers, activation, init_log_std, squash_mean,
    ortho_init, cnn, cnn_dense, shared_cnn). Hidden weights from encoders.hidden_initializer; the Gaussian mean's
    layer starts small under orthogonal initialisation (as the reference implementations' gain 0.01 does), at
    PyTorch's default under the other (SB3's ortho_init=False leaves every layer there).

    parts: None for one flat float vector (the networks TF-Agents builds for it, as runs before parts existed), else
    encoders.preprocessing's description of each observation part (is_dict: the observation is a dict of them).
    mask_key and values: DiscreteActor's."""
    activation = _ACTIVATIONS[cfg.activation]
    # Softplus is TF-Agents' std transform: pick the bias that gives exp(init_log_std) at start.
    std = math.exp(cfg.init_log_std)
    normal_net = functools.partial(
        normal_projection_network.NormalProjectionNetwork,
        state_dependent_std=False,
        std_bias_initializer_value=math.log(math.expm1(std)),
        # The scale of TF-Agents' VarianceScaling: weights of variance scale / fan_in.
        init_means_output_factor=0.01 if cfg.ortho_init else encoders.TORCH_DEFAULT_SCALE,
        mean_transform=normal_projection_network.tanh_squash_to_spec if cfg.squash_mean else None,
    )
    categorical_net = functools.partial(
        categorical_projection_network.CategoricalProjectionNetwork,
        logits_init_output_factor=0.1 if cfg.ortho_init else encoders.TORCH_DEFAULT_SCALE,  # 0.1: TF-Agents' default
    )
    layers, combiner = (
        (None, None)
        if parts is None
        else encoders.preprocessing(parts, is_dict, cfg.cnn, cfg.cnn_dense, seed, cfg.shared_cnn, cfg.ortho_init)
    )
    actor = actor_distribution_network.ActorDistributionNetwork(
        obs_spec,
        action_spec,
        preprocessing_layers=layers,
        preprocessing_combiner=combiner,
        fc_layer_params=tuple(cfg.actor_layers),
        activation_fn=activation,
        kernel_initializer=encoders.hidden_initializer(cfg.ortho_init, seed),
        seed=seed,
        discrete_projection_net=categorical_net,
        continuous_projection_net=normal_net,
        name="actor",
    )
    if mask_key is not None or action_spec.shape.rank == 1 and action_spec.dtype.is_integer:
        actor = DiscreteActor(actor, mask_key, values)
    value = value_network.ValueNetwork(
        obs_spec,
        preprocessing_layers=layers,
        preprocessing_combiner=combiner,
        fc_layer_params=tuple(cfg.value_layers),
        activation_fn=activation,
        kernel_initializer=encoders.hidden_initializer(cfg.ortho_init, seed + 1),
        name="value",
    )
    actor.create_variables(obs_spec)
    value.create_variables(obs_spec)
    return actor, value


class DiscreteActor(network.Network):
    """The actor for masked or several discrete actions. Only allowed values: sampling, the greedy action and the
    log-probabilities in PPO's loss all read these logits (TF-Agents' categorical head sets a masked value's logit
    to the lowest float). Several actions (MultiDiscrete, MultiBinary): one categorical per dimension, independent,
    as one distribution over the action vector (the event TF-Agents' policies check against the action spec).

    mask_key: the observation key of gymnasium's action mask (one flag per value; MultiDiscrete: each dimension's
    flags in turn), or None. values: MultiDiscrete's [dims, largest size] of the values each dimension has."""

    def __init__(self, actor, mask_key: str | None, values):
        # A Network that returns distributions (not TF-Agents' older DistributionNetwork): its output spec is read
        # from what it returns, the Independent included.
        super().__init__(actor.input_tensor_spec, actor.state_spec, name=actor.name)
        self._actor, self._mask_key = actor, mask_key
        self._values = None if values is None else np.asarray(values, bool)
        if values is not None:  # where each flag of a flat mask goes in [dims, largest size]; past them a False one
            flags = int(self._values.sum())
            self._flag_index = np.full(self._values.shape, flags)
            self._flag_index[self._values] = np.arange(flags)

    def call(self, observations, step_type=None, network_state=(), training=False):
        mask = None
        if self._values is not None and not self._values.all():  # one per observation: TF-Agents' head wants a batch
            batch = tf.shape(tf.nest.flatten(observations)[0])[:1]
            mask = tf.broadcast_to(self._values, tf.concat([batch, self._values.shape], 0))
        if self._mask_key is not None:
            given = tf.cast(observations[self._mask_key], tf.bool)  # [batch, flags]
            if self._values is not None:  # -> [batch, dims, largest size], False past a dimension's size
                given = tf.gather(tf.pad(given, [[0, 0], [0, 1]]), self._flag_index, axis=1)
            mask = given if mask is None else given & mask
        dist, state = self._actor(
            observations, step_type=step_type, network_state=network_state, training=training, mask=mask
        )
        if self._actor.output_spec.sample_spec.shape.rank == 1:
            dist = tfp.distributions.Independent(dist, reinterpreted_batch_ndims=1)
        return dist, state


def parameter_count(net) -> int:
    return int(sum(np.prod(v.shape) for v in net.trainable_variables))


def unique(variables: list) -> list:
    """Each variable once, in first-seen order (a shared CNN's are in both networks' lists: a gradient applied
    once)."""
    seen = set()
    return [v for v in variables if not (v.ref() in seen or seen.add(v.ref()))]
