"""Observation and action spaces: what each becomes (pipeline/gym/spaces.py), the image encoder's fit, the
normaliser's reach, and masked or several discrete actions sampled and trained on."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from models.encoders import NATURE_CNN, ImagePart
from pipeline.core import config
from pipeline.core.schema import ConfigError
from pipeline.gym import envs
from pipeline.gym.ppo import PPOLearner
from pipeline.gym.rollout import Collector
from pipeline.gym.spaces import spaces_of


class Spaces(gym.Env):
    """Any observation and action space; observations drawn from the space, episodes of 5 steps, reward 1 for a
    first action value of 0."""

    def __init__(self, observation=None, action=None):
        self.observation_space = observation or gym.spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = action or gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        first = np.ravel(action)[0]
        return self.observation_space.sample(), float(first == 0), self.t >= 5, False, {}


def _cfg(observation=None, action=None, num_envs=2, **model):
    cfg = config.from_dict(
        {
            "env": {"id": "tests.unit.test_spaces:Spaces", "num_envs": num_envs},
            "model": {"cnn_dense": 16, **model},
            "train": {"rollout_steps": 8, "num_minibatches": 2, "num_epochs": 2},
        }
    )
    cfg.env.kwargs = {"observation": observation, "action": action}
    return cfg


def _spaces(observation=None, action=None, **model):
    cfg = _cfg(observation, action, **model)
    env = envs.make_vector_env(cfg.env)
    try:
        return spaces_of(env, cfg.model.image_channels)
    finally:
        env.close()


IMAGE = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
STACKED = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)  # gymnasium's FrameStackObservation of grey frames


def test_each_space_becomes_its_part():
    dict_space = gym.spaces.Dict(
        {
            "frame": IMAGE,
            "grey": gym.spaces.Box(0, 255, (10, 12), np.uint8),
            "ram": gym.spaces.Box(0, 255, (128,), np.uint8),  # a uint8 vector is a vector, not an image
            "cell": gym.spaces.Discrete(7, start=3),
            "bits": gym.spaces.MultiBinary(3),
            "action_mask": gym.spaces.MultiBinary(2),
        }
    )
    spaces = _spaces(dict_space)
    kinds = {p.name: (p.kind, p.dtype) for p in spaces.parts}
    assert kinds == {
        "frame": ("image", "uint8"),
        "grey": ("image", "uint8"),
        "ram": ("vector", "float32"),
        "cell": ("discrete", "int64"),
        "bits": ("binary", "float32"),
        "action_mask": ("mask", "int32"),
    }
    assert spaces.is_dict and not spaces.flat_box and spaces.vector_keys == ["ram"]
    assert _spaces().flat_box  # a flat Box: TF-Agents' own networks and normaliser, as before parts existed


@pytest.mark.parametrize(
    "space, channels, first",
    [(IMAGE, "auto", False), (STACKED, "auto", True), (STACKED, "last", False), (IMAGE, "first", True)],
)
def test_channels_first_is_read_from_the_shape_or_the_config(space, channels, first):
    assert _spaces(space, image_channels=channels).parts[0].channels_first is first


@pytest.mark.parametrize(
    "observation, action, named",
    [
        (None, gym.spaces.Tuple([gym.spaces.Discrete(2)] * 2), "action space Tuple"),
        (gym.spaces.Text(5), None, "observation space Text"),
        (gym.spaces.Graph(gym.spaces.Box(0, 1, (2,)), None), None, "observation space Graph"),
        (gym.spaces.Dict({"x": gym.spaces.Box(0, 1, (2, 2))}), None, "under 'x'"),  # a float 2-D Box
        (gym.spaces.Dict({"action_mask": gym.spaces.MultiBinary(3)}), None, "action_mask' of shape \\(3,\\)"),
        (
            gym.spaces.Dict({"action_mask": gym.spaces.MultiBinary(2)}),
            gym.spaces.Box(-1, 1, (2,)),
            "for box actions",
        ),
    ],
)
def test_spaces_the_pipeline_cannot_learn_on_are_config_errors_naming_them(observation, action, named):
    with pytest.raises(ConfigError, match=f"env.id: .*{named}"):
        _spaces(observation, action)


@pytest.mark.parametrize("shape, first, sizes", [((84, 84, 4), False, [20, 9, 7]), ((7, 7, 3), False, [1, 1, 1])])
def test_the_nature_cnn_fits_any_frame(shape, first, sizes):
    """84x84 gives the Nature CNN's own 20, 9, 7; MiniGrid's 7x7 view (too small for an 8x8 kernel, where
    Stable-Baselines3's NatureCNN fails) gets kernels the size of what each layer receives."""
    layer = ImagePart(shape, first, NATURE_CNN, 16, seed=0)
    frames = tf.constant(np.random.default_rng(0).integers(0, 256, (2, *shape)), tf.uint8)
    x = tf.cast(frames, tf.float32) / 255.0
    for convolution, size in zip(layer.convolutions, sizes):
        x = convolution(x)
        assert x.shape[1:3] == (size, size)
    assert layer(frames).shape == (2, 16)
    copy = ImagePart.from_config(layer.get_config())  # TF-Agents rebuilds each preprocessing layer from its config
    assert copy(frames).shape == (2, 16)


def test_the_normaliser_covers_vectors_only():
    observation = gym.spaces.Dict(
        {"frame": gym.spaces.Box(0, 255, (6, 6, 1), np.uint8), "x": gym.spaces.Box(-9, 9, (3,))}
    )
    cfg = _cfg(observation)
    env = envs.make_vector_env(cfg.env)
    learner = PPOLearner(cfg, spaces_of(env))
    normalizer = learner.agent._observation_normalizer
    assert learner.agent.collect_policy._observation_normalizer is normalizer
    batch = {"frame": tf.fill([64, 6, 6, 1], tf.constant(200, tf.uint8)), "x": tf.random.normal([64, 3], 5.0, 2.0)}
    normalizer.update(batch)
    out = normalizer.normalize(batch)
    assert out["frame"] is batch["frame"]  # pixels as they were (scaled to [0, 1] by the encoder, not here)
    assert abs(float(tf.reduce_mean(out["x"]))) < 0.2 and abs(float(tf.math.reduce_std(out["x"])) - 1.0) < 0.2


@pytest.mark.parametrize("clip", [5.0, 10.0])
def test_normalised_observations_are_clipped_where_the_config_says(clip):
    """train.observation_clip: TF-Agents' 5 by default, SB3's and CleanRL's 10 when asked; the policy's own."""
    cfg = _cfg(gym.spaces.Box(-50, 50, (3,)))
    cfg.train.observation_clip = clip
    learner = PPOLearner(cfg, spaces_of(envs.make_vector_env(cfg.env)))
    normalizer = learner.agent._observation_normalizer
    assert learner.agent.collect_policy._observation_normalizer is normalizer
    normalizer.update(tf.random.stateless_normal([4096, 3], [0, 1], mean=1.0, stddev=2.0))
    out = normalizer.normalize(tf.constant([[1.0 + 2.0 * 8, 1.0, 1.0 - 2.0 * 20]])).numpy()[0]
    assert abs(out[0] - min(8.0, clip)) < 0.5 and abs(out[1]) < 0.1 and out[2] == -clip


def _collect_and_train(cfg):
    env = envs.make_vector_env(cfg.env)
    learner = PPOLearner(cfg, spaces_of(env))
    rollout = Collector(env, learner, 1.0, envs.episode_seeds(0, cfg.env.num_envs)).collect(cfg.train.rollout_steps)
    stats, _ = learner.train_on_rollout(rollout.arrays())
    assert all(np.isfinite(float(v)) for v in stats.values()), stats
    return learner, rollout


def test_multi_binary_actions_sample_bits_and_train():
    learner, rollout = _collect_and_train(_cfg(action=gym.spaces.MultiBinary(3)))
    assert rollout.actions.shape == (8, 2, 3) and set(np.unique(rollout.actions)) <= {0, 1}
    assert learner.greedy(tf.zeros([1, 2])).shape == (1, 3)


class MaskedMultiDiscrete(Spaces):
    """MultiDiscrete `nvec` with a random mask per step (each dimension keeps one value at least); raises on a
    masked value."""

    def __init__(self, nvec=(3, 5)):
        self.nvec, self.starts = list(nvec), np.cumsum([0, *nvec])[:-1]
        flags = int(sum(nvec))
        super().__init__(
            gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (2,)), "action_mask": gym.spaces.MultiBinary(flags)}),
            gym.spaces.MultiDiscrete(self.nvec),
        )

    def _draw(self):
        mask = self.np_random.integers(0, 2, int(sum(self.nvec))).astype(np.int8)
        for start, n in zip(self.starts, self.nvec):
            mask[start + self.np_random.integers(n)] = 1
        self.mask = mask
        return {"x": self.np_random.uniform(-1, 1, 2).astype(np.float32), "action_mask": mask}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._draw(), {}

    def step(self, action):
        if not all(self.mask[start + a] for start, a in zip(self.starts, action)):
            raise RuntimeError(f"masked action {action} under {self.mask}")
        _, reward, terminated, truncated, info = super().step(action)
        return self._draw(), reward, terminated, truncated, info


@pytest.mark.parametrize("nvec", [(3, 5), (4, 4)], ids=["unequal-sizes", "equal-sizes"])
def test_masked_multi_discrete_actions_keep_to_the_mask(nvec):
    """Sampled and greedy actions keep to each dimension's size and to the mask; the loss's log-probabilities are
    those of the masked distribution (a masked value has none of the probability)."""
    cfg = _cfg(num_envs=4)
    cfg.env.id, cfg.env.kwargs = "tests.unit.test_spaces:MaskedMultiDiscrete", {"nvec": nvec}
    learner, rollout = _collect_and_train(cfg)  # the environment raises at a masked value
    starts = np.cumsum([0, *nvec])[:-1]
    masks = rollout.observations["action_mask"].reshape(-1, sum(nvec))
    actions = rollout.actions.reshape(-1, 2)
    assert (actions < np.array(nvec)).all()
    observations = {k: v.reshape(-1, *v.shape[2:]) for k, v in rollout.observations.items()}
    greedy = learner.greedy(observations).numpy()
    assert all(m[starts[0] + a[0]] and m[starts[1] + a[1]] for a, m in zip(greedy, masks))
    probs = tf.nn.softmax(learner.distribution(observations).distribution.logits_parameter()).numpy()
    allowed = np.zeros_like(probs, bool)
    for d, (start, n) in enumerate(zip(starts, nvec)):
        allowed[:, d, :n] = masks[:, start : start + n] > 0
    assert probs[~allowed].max() < 1e-30 and np.allclose(probs.sum(-1), 1.0)


def test_a_mask_in_info_becomes_the_observations_mask():
    """Taxi gives its mask in info (gymnasium's other convention): it joins the observation, and no sampled
    action is one the mask forbids. env.action_mask: observation ignores it."""
    cfg = config.from_dict({"env": {"id": "Taxi-v4", "num_envs": 4}, "train": {"rollout_steps": 64}})
    env = envs.make_vector_env(cfg.env)
    learner = PPOLearner(cfg, spaces_of(env))
    assert [(p.name, p.kind) for p in learner.spaces.parts] == [("action_mask", "mask"), ("observations", "discrete")]
    rollout = Collector(env, learner, 1.0, envs.episode_seeds(0, 4)).collect(64)
    masks, actions = rollout.observations["action_mask"].reshape(-1, 6), rollout.actions.reshape(-1)
    assert (masks == 0).any() and masks[np.arange(len(actions)), actions].all()
    cfg.env.action_mask = "observation"
    assert spaces_of(envs.make_vector_env(cfg.env)).mask is None


def _pixel_learner(shared: bool):
    cfg = config.from_dict(
        {
            "env": {"id": "tests.corridor:Corridor", "kwargs": {"observation": "pixels"}, "num_envs": 4, "seed": 1},
            "model": {"cnn": [[8, 4, 2], [8, 3, 1]], "cnn_dense": 16, "shared_cnn": shared},
            "train": {"rollout_steps": 16, "num_minibatches": 2, "num_epochs": 2},
        }
    )
    env = envs.make_vector_env(cfg.env)
    return env, PPOLearner(cfg, spaces_of(env))


def test_a_shared_cnn_is_one_pass_and_the_same_gradient(monkeypatch):
    """The policy and value networks hold one CNN, each variable once in what the optimizer updates; PPO's loss runs
    it once (the second head reads the first call's features) and its gradient equals two passes'."""
    env, learner = _pixel_learner(shared=True)
    actor_cnn = {v.ref() for v in learner.agent.actor_net.trainable_variables if len(v.shape) == 4}
    value_cnn = {v.ref() for v in learner.agent._value_net.trainable_variables if len(v.shape) == 4}
    assert actor_cnn == value_cnn and len(actor_cnn) == 2
    assert len({v.ref() for v in learner.variables_to_train}) == len(learner.variables_to_train)
    _, separate = _pixel_learner(shared=False)
    assert len(separate.variables_to_train) == len(learner.variables_to_train) + 6  # a second CNN and dense layer

    rollout = Collector(env, learner, 1.0, envs.episode_seeds(0, 4)).collect(16)
    rng = np.random.default_rng(0)
    batch = [
        rollout.observations.reshape(-1, 12, 12, 3),
        rollout.actions.reshape(-1),
        rollout.log_probs.reshape(-1),
        rng.normal(size=64).astype(np.float32),  # advantages
        rng.normal(size=64).astype(np.float32),  # returns
        np.zeros(64, np.float32),  # old values
    ]

    def gradients():
        fn = tf.function(lambda *rows: learner._share_gradients(*rows, 1)[0], autograph=False)
        graph = fn.get_concrete_function(*batch).graph
        return [g.numpy() for g in fn(*batch)], sum(op.type == "Conv2D" for op in graph.get_operations())

    once, convolutions_once = gradients()
    monkeypatch.setattr(ImagePart, "call", lambda self, inputs, training=False: self._encode(inputs))
    twice, convolutions_twice = gradients()  # every call a pass of its own
    assert 0 < convolutions_once < convolutions_twice
    for a, b, v in zip(once, twice, learner.variables_to_train):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=v.name)


@pytest.mark.parametrize("ortho_init", [True, False])
def test_ortho_init_picks_every_layers_starting_weights(ortho_init):
    """model.ortho_init: true, orthogonal hidden weights with gain sqrt 2 (CNN included) and a small mean layer; false,
    PyTorch's defaults everywhere (SB3's ortho_init=False): hidden weights uniform within +-1/sqrt(fan_in), the mean
    layer of that variance."""
    observation = gym.spaces.Dict(
        {"frame": gym.spaces.Box(0, 255, (12, 12, 3), np.uint8), "position": gym.spaces.Box(-1, 1, (3,), np.float32)}
    )
    cfg = _cfg(
        observation,
        gym.spaces.Box(-1, 1, (2,), np.float32),
        actor_layers=[64, 64],
        value_layers=[64, 64],
        cnn=[[8, 4, 2], [8, 3, 1]],
        ortho_init=ortho_init,
    )
    env = envs.make_vector_env(cfg.env)
    learner = PPOLearner(cfg, spaces_of(env))
    env.close()
    actor, value = learner.agent.actor_net, learner.agent._value_net
    hidden = [v for net in (actor, value) for v in net._encoder.trainable_variables if "kernel" in v.name]
    assert len({v.ref() for v in hidden}) == 2 + 1 + 2 + 2  # shared CNN, its dense layer, each network's two layers
    for v in hidden:
        w = v.numpy().reshape(-1, v.shape[-1])
        fan_in = w.shape[0]
        if ortho_init:
            gram = w.T @ w if fan_in >= w.shape[1] else w @ w.T
            np.testing.assert_allclose(gram, 2.0 * np.eye(len(gram)), atol=1e-4, err_msg=v.name)
        else:
            assert np.abs(w).max() <= 1 / np.sqrt(fan_in) + 1e-7, v.name
            assert np.std(w) == pytest.approx(1 / np.sqrt(3 * fan_in), rel=0.15), v.name
    means = actor._projection_networks._means_projection_layer.kernel.numpy()
    scale = 0.01 if ortho_init else 1 / 3  # variance x fan_in
    assert np.std(means) == pytest.approx(np.sqrt(scale / 64), rel=0.3)
