"""The Atari preprocessing (pipeline/gym/atari.py): a lost life ends an episode and rewards are clipped for learning
only; reported returns are whole games' raw scores. Exact on a scripted game with ALE's interface, then on
Breakout itself."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from pipeline.core import config
from pipeline.gym import atari, envs
from pipeline.gym.ppo import PPOLearner
from pipeline.gym.rollout import Collector, GreedyEpisodes
from pipeline.gym.spaces import spaces_of

LIVES, FRAMES_PER_LIFE, POINTS = 3, 40, 5.0


class _Ale:
    """The part of ale_py.ALEInterface the wrappers read: lives and the screen."""

    def __init__(self, game):
        self.game = game

    def lives(self):
        return self.game.lives

    def getScreenGrayscale(self, out):
        out[...] = self.game.frame % 256

    def getScreenRGB(self, out):
        out[...] = self.game.frame % 256


class ScriptedGame(gym.Env):
    """One frame per step; every 4th frame scores POINTS; a life is lost every FRAMES_PER_LIFE frames; the game is
    over with the last life. Raw score of a whole game: LIVES * FRAMES_PER_LIFE / 4 * POINTS."""

    observation_space = gym.spaces.Box(0, 255, (210, 160, 3), np.uint8)
    action_space = gym.spaces.Discrete(4)

    def __init__(self):
        self.ale, self._frameskip = _Ale(self), 1
        self.frame, self.lives = 0, LIVES

    def get_action_meanings(self):
        return ["NOOP", "FIRE", "RIGHT", "LEFT"]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.frame, self.lives = 0, LIVES
        return self._screen(), {}

    def step(self, action):
        self.frame += 1
        if self.frame % FRAMES_PER_LIFE == 0:
            self.lives -= 1
        return self._screen(), POINTS * (self.frame % 4 == 0), self.lives == 0, False, {}

    def _screen(self):
        return np.full((210, 160, 3), self.frame % 256, np.uint8)


def _run(learning: bool, steps: int):
    env = atari.wrap(ScriptedGame(), learning=learning)
    env.reset(seed=0)
    rewards, ends, games = [], [], []
    for _ in range(steps):
        _, reward, terminated, truncated, info = env.step(0)
        rewards.append(reward)
        ends.append(terminated or truncated)
        if "episode" in info:
            games.append(float(info["episode"]["r"]))
        if terminated or truncated:
            env.reset()
    return env, np.array(rewards), np.array(ends), games


def test_learning_sees_lives_as_episodes_and_clipped_rewards():
    env, rewards, ends, games = _run(learning=True, steps=60)
    assert env.observation_space.shape == (4, 84, 84) and env.observation_space.dtype == np.uint8
    assert set(rewards) == {1.0}  # 5 points a step (one scoring frame in every 4), clipped to its sign
    # ~10 agent steps per life (40 frames / 4; the no-ops at reset and FIRE take a few): an episode per life...
    assert ends.sum() >= 4
    # ...while the game goes on: a whole game is 3 lives, and RecordEpisodeStatistics reports it once, unclipped.
    whole_game = LIVES * FRAMES_PER_LIFE / 4 * POINTS
    assert games and all(g <= whole_game for g in games) and len(games) < ends.sum()


def test_evaluation_sees_whole_games_and_raw_scores():
    _, rewards, ends, games = _run(learning=False, steps=60)
    assert set(rewards) <= {0.0, 5.0, 10.0} and rewards.max() >= 5.0  # raw points (two scoring frames in a skip)
    assert ends.sum() == len(games) >= 1  # episodes are games
    # The game's own score: the agent's steps' points and those of the no-ops and FIRE at reset.
    whole_game = LIVES * FRAMES_PER_LIFE / 4 * POINTS
    assert games[0] == whole_game > sum(rewards[: np.argmax(ends) + 1])
    # The evaluation runner reports the same (the episode runner of the evaluate stage and blessing).
    vector = gym.vector.SyncVectorEnv(
        [lambda: atari.wrap(ScriptedGame(), learning=False)] * 2, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    observations, _ = vector.reset(seed=[0, 1])
    returns, lengths = GreedyEpisodes(lambda o: tf.zeros([2], tf.int64), 2).run(vector, observations)
    assert returns.tolist() == [whole_game] * 2 and lengths.tolist() == [LIVES * FRAMES_PER_LIFE] * 2  # frames


@pytest.mark.parametrize("learning", [True, False])
def test_breakout_frames_and_whole_games(learning):
    """Breakout itself: 4 stacked 84x84 frames, channels first; the train stage's collector reports whole games."""
    cfg = config.from_dict(
        {
            "env": {"id": "BreakoutNoFrameskip-v4", "preprocessing": "atari", "num_envs": 2},
            "model": {"cnn": [[8, 8, 4], [8, 4, 2]], "cnn_dense": 16},
            "train": {"rollout_steps": 8, "num_minibatches": 2},
        }
    )
    env = envs.make_vector_env(cfg.env, learning=learning)
    spaces = spaces_of(env)
    assert [(p.kind, p.shape, p.channels_first) for p in spaces.parts] == [("image", (4, 84, 84), True)]
    if not learning:
        return
    learner = PPOLearner(cfg, spaces)
    collector = Collector(env, learner, 1.0, envs.episode_seeds(0, 2), episodes_in_info=True)
    games, lives_lost = [], 0
    for _ in range(60):  # a random policy's Breakout game is about 180 steps
        rollout = collector.collect(8)
        games += rollout.episode_returns
        lives_lost += int(rollout.terminated.sum())
    assert games and lives_lost >= 4 * len(games)  # 5 lives a game: episodes for learning, games reported
    assert set(np.unique(rollout.rewards)) <= {0.0, 1.0}
