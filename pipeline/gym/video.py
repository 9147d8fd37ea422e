"""A greedy evaluation episode as an animated GIF: in TensorBoard's Images tab and under RUN_DIR/videos/ (what
Stable-Baselines3's VecVideoRecorder and CleanRL's --capture-video give). Off, with one log line, where the
environment cannot render rgb_array frames.

The environment renders in a process of its own (pipeline/gym/render_worker.py, started clean, without TensorFlow):
MuJoCo's EGL renderer crashed the whole run when it drew in the process running TensorFlow, and a renderer that
crashes there now only ends the video. This process chooses the actions.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import multiprocessing
from pathlib import Path

import numpy as np

from pipeline.core import summaries
from pipeline.gym import render_worker, spaces
from pipeline.gym.config import GymConfig

log = logging.getLogger(__name__)

WIDTH = 320  # frames are scaled down to this width at most: a GIF of full-size frames is megabytes
PALETTE_FRAMES, PALETTE_COLORS = 8, 128
TIMEOUT_S = 120  # for the rendering process to start, or to answer one step


def record(cfg: GymConfig, greedy, spaces_: spaces.Spaces) -> list[np.ndarray] | None:
    """The frames of one greedy episode from evaluation's first seed (whole games under Atari preprocessing), at
    most evaluate.video_frames of them; None where the environment does not render."""
    env_cfg = dataclasses.replace(
        cfg.env, num_envs=1, vectorization="sync", kwargs={**cfg.env.kwargs, "render_mode": "rgb_array"}
    )
    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    worker = context.Process(target=render_worker.run, args=(there, env_cfg, cfg.evaluate.seed), daemon=True)
    worker.start()
    there.close()
    frames = []
    try:
        reply = _receive(here)
        while isinstance(reply, tuple):
            observation, frame, ended = reply
            frames.append(frame)
            if ended or len(frames) >= cfg.evaluate.video_frames:
                break
            action = greedy(spaces.as_nest(spaces_, spaces.observation_parts(spaces_, observation))).numpy()
            here.send(action)
            reply = _receive(here)
        if isinstance(reply, str):
            log.info("video: off (%s)", reply)
            return None
    except (EOFError, OSError, TimeoutError) as e:
        log.info("video: off (the rendering process ended: %s)", e or type(e).__name__)
        return None
    finally:
        here.close()
        worker.join(timeout=10)
        if worker.is_alive():
            worker.kill()
    return frames or None


def _receive(connection):
    if not connection.poll(TIMEOUT_S):
        raise TimeoutError(f"no frame in {TIMEOUT_S} s")
    return connection.recv()


def write(frames: list[np.ndarray], folder: Path, name: str, step: int, fps: int) -> Path:
    """frames -> folder/name.gif and the current TensorBoard writer's eval/video image at `step`."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    if images[0].width > WIDTH:
        size = (WIDTH, round(images[0].height * WIDTH / images[0].width))
        images = [image.resize(size, Image.Resampling.BILINEAR) for image in images]
    # One palette for every frame, from frames across the episode, and no dithering: a tenth of the size of
    # per-frame dithered palettes (a MuJoCo episode: 0.6 MB, not 5 MB) and a third of the time.
    sample = images[:: max(1, len(images) // PALETTE_FRAMES)][:PALETTE_FRAMES]
    montage = Image.fromarray(np.concatenate([np.asarray(image) for image in sample], axis=0))
    palette = montage.quantize(colors=PALETTE_COLORS, dither=Image.Dither.NONE)
    images = [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in images]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.gif"
    path.write_bytes(buffer.getvalue())
    summaries.encoded_image("eval/video", buffer.getvalue(), images[0].width, images[0].height, step)
    return path
