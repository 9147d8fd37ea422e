"""Keras layers that turn each observation part into features, for TF-Agents' `preprocessing_layers`.

TF-Agents copies every preprocessing layer from its config (the actor and the value network each get their own;
a shared CNN is the one exception, ImagePart), so each layer here is rebuilt from plain numbers. Pixels are scaled
to [0, 1] inside the network: training, evaluation and the export all take the environment's raw uint8 frames.
"""

from __future__ import annotations

import math
import uuid
import weakref

import tensorflow as tf

# A shared ImagePart's features per graph: {(layer, frames, training): (frames, features)}. Kept off the layer:
# tf.Module walks a layer's attributes for its variables.
_FEATURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# The Nature DQN encoder (Mnih et al. 2015), as CleanRL's and Stable-Baselines3's Atari PPO use it.
NATURE_CNN = [[32, 8, 4], [64, 4, 2], [64, 3, 1]]


# PyTorch's default Linear and Conv2d weights, uniform within +-1/sqrt(fan_in), as a VarianceScaling scale.
TORCH_DEFAULT_SCALE = 1 / 3


def hidden_initializer(ortho_init: bool, seed: int):
    """Hidden weights: orthogonal with gain sqrt 2 (CleanRL; SB3's ortho_init=True), or PyTorch's own default for
    Linear and Conv2d weights, uniform within +-1/sqrt(fan_in) (SB3's ortho_init=False, which the RL Zoo's tuned
    MuJoCo settings use): at their learning rates near 2e-5 the weights stay near where they start."""
    if ortho_init:
        return tf.keras.initializers.Orthogonal(gain=math.sqrt(2), seed=seed)
    return tf.keras.initializers.VarianceScaling(TORCH_DEFAULT_SCALE, "fan_in", "uniform", seed=seed)


class VectorPart(tf.keras.layers.Layer):
    """A float vector or bits, as they are."""

    def call(self, inputs):
        return tf.cast(inputs, tf.float32)


class OneHotPart(tf.keras.layers.Layer):
    """A Discrete observation's index as a one-hot vector."""

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def call(self, inputs):
        return tf.one_hot(tf.cast(inputs, tf.int32), self.n)

    def get_config(self):
        return {**super().get_config(), "n": self.n}


class DropPart(tf.keras.layers.Layer):
    """A part the encoder does not read (the action mask: it goes to the distribution)."""

    def call(self, inputs):
        return tf.zeros([tf.shape(inputs)[0], 0])


class ImagePart(tf.keras.layers.Layer):
    """uint8 frames -> [0, 1] -> convolutions (ReLU) -> a ReLU dense layer, weights from hidden_initializer.

    A convolution whose kernel is larger than the image it receives takes a kernel the size of that image, so the
    default encoder fits any frame (the Nature CNN wants 36x36 or more; MiniGrid's views are 7x7).

    Shared (share_id set): the actor and the value network hold this one layer, as CleanRL's and Stable-Baselines3's
    pixel policies share their CNN. TF-Agents rebuilds each network's preprocessing layers from their configs; a
    shared layer's config names it, and from_config gives the layer itself back. In a graph, a second call on the
    same frames tensor (PPO's loss runs the actor and the value on the same observations) returns the first call's
    features: one CNN pass forward and, the tape summing both heads' gradients at that tensor, one backward."""

    _shared: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # share_id -> the layer

    def __init__(
        self,
        shape,
        channels_first: bool,
        cnn,
        dense: int,
        seed: int,
        share_id: str | None = None,
        ortho_init: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.share_id, self.ortho_init = share_id, ortho_init
        if share_id is not None:
            ImagePart._shared[share_id] = self
        self.shape, self.channels_first = [int(s) for s in shape], channels_first
        self.cnn, self.dense, self.seed = [list(layer) for layer in cnn], dense, seed
        height, width = self.shape[1:3] if channels_first else self.shape[:2]
        self.convolutions = []
        for i, (filters, kernel, stride) in enumerate(self.cnn):
            size = (min(kernel, height), min(kernel, width))
            self.convolutions.append(
                tf.keras.layers.Conv2D(
                    filters,
                    size,
                    strides=stride,
                    activation="relu",
                    kernel_initializer=hidden_initializer(ortho_init, seed + i),
                )
            )
            height, width = (height - size[0]) // stride + 1, (width - size[1]) // stride + 1
        self.flatten = tf.keras.layers.Flatten()
        self.projection = tf.keras.layers.Dense(
            dense, activation="relu", kernel_initializer=hidden_initializer(ortho_init, seed)
        )

    @classmethod
    def from_config(cls, config):
        shared = cls._shared.get(config.get("share_id"))
        return shared if shared is not None else cls(**config)

    def call(self, inputs, training=False):
        if self.share_id is None or tf.executing_eagerly():
            return self._encode(inputs)
        seen = _FEATURES.setdefault(tf.compat.v1.get_default_graph(), {})
        key = (id(self), id(inputs), bool(training))
        if key in seen and seen[key][0] is inputs:
            return seen[key][1]
        features = self._encode(inputs)
        seen[key] = (inputs, features)  # the frames tensor kept alive: its id is not reused in this graph
        return features

    def _encode(self, inputs):
        x = tf.cast(inputs, tf.float32) / 255.0
        if len(self.shape) == 2:
            x = x[..., None]
        elif self.channels_first:
            x = tf.transpose(x, [0, 2, 3, 1])
        for convolution in self.convolutions:
            x = convolution(x)
        return self.projection(self.flatten(x))

    def get_config(self):
        config = dict(shape=self.shape, channels_first=self.channels_first, cnn=self.cnn, dense=self.dense)
        extra = {"seed": self.seed, "share_id": self.share_id, "ortho_init": self.ortho_init}
        return {**super().get_config(), **config, **extra}


def preprocessing(
    parts: list[dict], is_dict: bool, cnn, cnn_dense: int, seed: int, shared_cnn: bool = False, ortho_init: bool = True
):
    """(preprocessing_layers, preprocessing_combiner) for TF-Agents' networks.

    parts: one {name, kind, shape, n, channels_first} per observation part (kinds: vector, image, discrete,
    binary, mask); is_dict: the observation is a dict of them; shared_cnn: the actor and value networks built from
    these layers share each image's CNN; ortho_init: hidden_initializer's."""

    def layer(part):
        kind = part["kind"]
        if kind == "image":
            share_id = uuid.uuid4().hex if shared_cnn else None
            return ImagePart(
                part["shape"],
                part["channels_first"],
                cnn,
                cnn_dense,
                seed,
                share_id,
                ortho_init,
                name=f"{part['name']}_cnn",
            )
        if kind == "discrete":
            return OneHotPart(part["n"], name=f"{part['name']}_one_hot")
        if kind == "mask":
            return DropPart(name=f"{part['name']}_dropped")
        return VectorPart(name=part["name"])

    layers = {part["name"]: layer(part) for part in parts}
    if not is_dict:
        return next(iter(layers.values())), None
    return layers, tf.keras.layers.Concatenate(axis=-1)
