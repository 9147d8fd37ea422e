"""The process an environment renders a video in (pipeline/gym/video.py): it imports no TensorFlow."""

from __future__ import annotations

import os

import numpy as np

from pipeline.gym import envs
from pipeline.gym.config import EnvConfig


def run(connection, env_cfg: EnvConfig, seed: int) -> None:
    """(observation, frame, ended) after reset and after each action it is sent; a string
    saying why where it cannot render."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo's renderer without a display (this process only)
    try:
        env = envs.make_vector_env(env_cfg, learning=False)
    except Exception as e:  # its constructor takes no render_mode, or the environment fails here
        connection.send(f"{env_cfg.id} cannot render rgb_array frames: {e}")
        return
    try:
        observation, _ = env.reset(seed=envs.episode_seeds(seed, 1))
        ended = False
        while True:
            frame = env.render()
            frame = frame[0] if isinstance(frame, (tuple, list)) else frame
            if frame is None or np.ndim(frame) != 3:
                connection.send(f"{env_cfg.id} renders no rgb_array frame")
                return
            connection.send((observation, np.asarray(frame, np.uint8), ended))
            if ended:
                return
            action = connection.recv()
            observation, _, terminated, truncated, _ = env.step(envs.env_actions(env, action))
            ended = bool(terminated[0] or truncated[0])
    except EOFError:  # enough frames: the recorder hung up
        return
    except Exception as e:
        connection.send(f"rendering failed: {e}")
    finally:
        env.close()
