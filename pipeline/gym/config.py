"""The gym task's config: env, model, train and evaluate sections, with the shared export and distribute."""

from __future__ import annotations

import dataclasses

from pipeline.core.schema import ConfigError, TaskConfig, option
from pipeline.core.sections import DistributeConfig, ExportConfig


@dataclasses.dataclass
class EnvConfig:
    id: str = option(
        "CartPole-v1",
        "A gymnasium id, or module:Class (or module:function) making your own environment "
        "(importable from where the run starts). Observations: a flat Box, an image (uint8 Box), Discrete, "
        "MultiBinary or a Dict of them (an action_mask key masks actions); actions: Discrete, MultiDiscrete, "
        "MultiBinary or a flat Box.",
    )
    kwargs: dict = option(
        {}, "Keyword arguments of the environment's constructor, e.g. {continuous: true} for LunarLander-v3."
    )
    num_envs: int = option(
        8, "Environments stepped together in one process (one batched policy call per step).", low=1, high=1024
    )
    preprocessing: str = option(
        "none",
        "atari: an Atari game (ale-py's ids, e.g. BreakoutNoFrameskip-v4) with the standard preprocessing: 30 "
        "no-ops, 4 frames skipped with max-pooling, 84x84 grayscale, 4 stacked, FIRE at reset, a lost life ending "
        "the episode and rewards clipped to their sign for learning only; reported returns are whole games' raw "
        "scores.",
        choices=["none", "atari"],
    )
    vectorization: str = option(
        "sync",
        "sync steps the environments one after another in this process; async steps each in a process of its own "
        "(gymnasium's AsyncVectorEnv, shared memory): for environments whose step costs more than the "
        "inter-process round trip (benchmarks/README.md).",
        choices=["sync", "async"],
    )
    action_mask: str = option(
        "auto",
        "Where the environment gives gymnasium's action mask: auto finds an 'action_mask' key in a Dict "
        "observation, or else in reset's info; info: info['action_mask'] always; observation: the Dict key only "
        "(an info mask is ignored).",
        choices=["auto", "observation", "info"],
    )
    seed: int = option(0, "Seeds environments, network initialisation and action sampling.", low=0)
    max_episode_steps: int | None = option(
        None, "Overrides the environment's own time limit (truncation, which bootstraps).", low=1
    )


@dataclasses.dataclass
class ModelConfig:
    actor_layers: list[int] = option([64, 64], "Hidden layer widths of the policy network.", item_low=1)
    value_layers: list[int] = option([64, 64], "Hidden layer widths of the value network.", item_low=1)
    activation: str = option(
        "tanh",
        "Hidden activation; tanh is PPO's usual choice for control tasks.",
        choices=["tanh", "relu", "elu", "gelu"],
    )
    init_log_std: float = option(0.0, "Initial log standard deviation of a Gaussian policy (Box actions).")
    squash_mean: bool = option(
        True,
        "Box actions: true squashes the Gaussian's mean into the action bounds with a tanh (TF-Agents' head); "
        "false leaves it unbounded, as SB3 and CleanRL do (sampled and greedy actions are clipped to the bounds "
        "either way before the environment or a client sees them).",
    )
    ortho_init: bool = option(
        True,
        "true: hidden weights orthogonal with gain sqrt 2 and the policy's output layer near zero (CleanRL; "
        "SB3's default); false: PyTorch's default weights, uniform within +-1/sqrt(fan_in), for the hidden layers "
        "and the policy's output layer (SB3's ortho_init=False, which the RL Zoo's tuned MuJoCo settings use). "
        "Biases start at zero and the value output within +-0.03 (TF-Agents') either way.",
    )
    cnn: list[list[int]] = option(
        [[32, 8, 4], [64, 4, 2], [64, 3, 1]],
        "Image observations: convolutions as [filters, kernel, stride] (ReLU), the Nature CNN by default; a "
        "kernel larger than the image it receives shrinks to that image's size, so any frame fits.",
        item_low=1,
    )
    cnn_dense: int = option(512, "Image observations: width of the ReLU layer after the convolutions.", low=1)
    shared_cnn: bool = option(
        True,
        "Image observations: the policy and value networks share one CNN (and its dense layer), trained by both "
        "losses, as CleanRL's and Stable-Baselines3's pixel policies do; false: a CNN each.",
    )
    image_channels: str = option(
        "auto",
        "Where an image's channels are: auto reads [C, H, W] when the first axis has 1-4 entries and the last "
        "does not (stacked frames), else [H, W, C].",
        choices=["auto", "first", "last"],
    )


@dataclasses.dataclass
class TrainConfig:
    total_env_steps: int = option(100_000, "Budget of environment steps, summed over all environments.", low=1)
    rollout_steps: int = option(128, "Steps per environment per iteration (rollout length).", low=1)
    num_epochs: int = option(10, "Passes over each rollout.", low=1)
    num_minibatches: int = option(4, "Minibatches per epoch; must divide num_envs * rollout_steps.", low=1)
    learning_rate: float = option(3e-4, "Adam learning rate at the start.", low=0.0, low_open=True)
    lr_schedule: str = option(
        "constant", "constant, or linear decay to 0 over total_env_steps.", choices=["constant", "linear"]
    )
    clip_ratio: float = option(
        0.2, "PPO's epsilon: the probability ratio is clipped to [1-eps, 1+eps].", low=0.0, low_open=True, high=1.0
    )
    value_clip: float | None = option(
        None,
        "Clip value predictions to +-this around the rollout's values in the "
        "value loss (SB3's clip_range_vf); null: off.",
        low=0.0,
        low_open=True,
    )
    gamma: float = option(0.99, "Discount factor.", low=0.0, high=1.0)
    gae_lambda: float = option(0.95, "GAE lambda (1 = Monte Carlo returns, 0 = one-step TD).", low=0.0, high=1.0)
    entropy_coef: float = option(0.0, "Weight of the entropy bonus.", low=0.0)
    value_coef: float = option(
        0.5,
        "Weight of the value loss, the mean squared error with no 1/2 (SB3's vf_coef; the "
        "same convention as ppo.value_coef).",
        low=0.0,
        low_open=True,
    )
    max_grad_norm: float | None = option(0.5, "Global gradient-norm clip; null disables it.", low=0.0, low_open=True)
    normalize_observations: bool = option(True, "Running mean/std observation normaliser, saved inside the policy.")
    observation_clip: float = option(
        5.0,
        "Normalised observations are clipped to +-this many standard deviations (TF-Agents' 5; SB3's VecNormalize "
        "and CleanRL's NormalizeObservation use 10).",
        low=0.0,
        low_open=True,
    )
    observation_stats: str = option(
        "rollout",
        "When the observation normaliser's running statistics take new observations: rollout (TF-Agents' way: "
        "after each update, from the whole rollout, so a rollout is collected and trained on with one set of "
        "statistics; the first rollout sees empty ones) or step (SB3's VecNormalize, CleanRL's NormalizeObservation: "
        "each step's observations before the policy acts on them; the update then recomputes the rollout's "
        "log-probabilities and values with the statistics at its end). step needs one worker.",
        choices=["rollout", "step"],
    )
    normalize_rewards: bool = option(
        False,
        "Divide rewards by a running standard deviation of each environment's discounted return, clipped to +-10 "
        "(SB3's VecNormalize, CleanRL's NormalizeReward: what MuJoCo tasks are trained with); kept in checkpoints, "
        "not part of the exported policy. Reported returns stay raw.",
    )
    reward_scale: float = option(
        1.0, "Rewards are multiplied by this for learning (reported returns are raw).", low=0.0, low_open=True
    )
    normalize_advantages: bool = option(
        True,
        "Whiten advantages (zero mean, unit variance) over what advantage_whitening names.",
    )
    advantage_whitening: str = option(
        "rollout",
        "Where normalize_advantages takes its statistics: rollout (the whole rollout, before minibatches are cut: "
        "TF-Agents, TRL) or minibatch (each minibatch, as SB3 and CleanRL do; under tf.distribute the whole "
        "minibatch's, not a replica's share).",
        choices=["rollout", "minibatch"],
    )
    target_kl: float | None = option(
        None,
        "Early stop: end an iteration's epochs once a minibatch's approximate KL (k3) to the rollout's policy "
        "exceeds 1.5 x this, before its step (Stable-Baselines3's rule); null: always run every epoch.",
        low=0.0,
        low_open=True,
    )
    adam_epsilon: float = option(
        1e-5, "Adam epsilon (1e-5 as in the PPO reference implementations).", low=0.0, low_open=True
    )
    checkpoint_every: int = option(10, "Iterations between checkpoints (and one at the end).", low=1)
    log_every: int = option(1, "Iterations between TensorBoard train summaries.", low=1)
    warm_start: str | None = option(
        None,
        "Start a new run's agent (networks, observation normaliser, the optimizer's moments; not the env-step "
        "counters or RNG) from another run: a serving base's model folder (its newest version: the one served), a "
        "version folder, or a run directory (its latest checkpoint); same env, model and normaliser setting. "
        "Ignored once the run has a checkpoint of its own.",
    )
    stop_at_return: float | None = option(
        None,
        "Stop early once the last 50 training episodes and a greedy evaluation (evaluate.episodes) both "
        "average at least this; null trains the whole budget.",
    )


@dataclasses.dataclass
class EvaluateConfig:
    episodes: int = option(10, "Greedy episodes to run.", low=1)
    seed: int = option(10_000, "Seed of the evaluation environment (kept apart from training seeds).", low=0)
    video_frames: int = option(
        500,
        "A greedy episode recorded as an animated GIF (TensorBoard's Images tab, RUN_DIR/videos/) up to this many "
        "frames, where the environment renders rgb_array frames; 0: no video.",
        low=0,
    )
    video_fps: int = option(30, "Frames per second of the recorded episode.", low=1, high=100)


@dataclasses.dataclass
class GymConfig(TaskConfig):
    """task: gym (the default): PPO on a gymnasium environment."""

    task = "gym"
    # A checkpoint only fits the environment and networks it was made with (and the normaliser, if any).
    resume_locked = ("env", "model", "train.normalize_observations", "train.normalize_rewards")
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)

    def finish(self) -> None:
        if any(len(row) != 3 for row in self.model.cnn):
            raise ConfigError(
                f"model.cnn: {self.model.cnn} has a layer that is not [filters, kernel, stride]; allowed: a list of "
                f"[filters, kernel, stride] triples, e.g. [[32, 8, 4], [64, 4, 2], [64, 3, 1]]"
            )
        batch = self.env.num_envs * self.train.rollout_steps
        if batch % self.train.num_minibatches:
            raise ConfigError(
                f"train.num_minibatches: {self.train.num_minibatches} does not divide the rollout batch "
                f"env.num_envs * train.rollout_steps = {batch}; allowed values: divisors of {batch}"
            )
