"""Typed run configuration: YAML in, validated dataclasses out, before any work starts.

Every field carries its doc, its default (PPO's usual value, not PPOClipAgent's) and its bounds in
`metadata`, so validation, error messages and the README's reference all read from one place.
A YAML file holds only what differs from the defaults; unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Optional

import yaml

from models.lora import TARGETS


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key path and what is allowed."""


def _field(default, doc: str, *, choices=None, low=None, high=None, low_open=False, item_low=None):
    meta = {"doc": doc, "choices": choices, "low": low, "high": high, "low_open": low_open,
            "item_low": item_low}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class EnvConfig:
    id: str = _field("CartPole-v1", "A gymnasium id, or module:Class (or module:function) making your own environment "
                     "(importable from where the run starts); a flat Box observation and a Discrete or flat Box "
                     "action.")
    kwargs: dict = _field({}, "Keyword arguments of the environment's constructor, e.g. {continuous: true} for "
                          "LunarLander-v3.")
    num_envs: int = _field(8, "Environments stepped together in one process (one batched policy call per step).",
                           low=1, high=1024)
    seed: int = _field(0, "Seeds environments, network initialisation and action sampling.", low=0)
    max_episode_steps: Optional[int] = _field(
        None, "Overrides the environment's own time limit (truncation, which bootstraps).", low=1)


@dataclasses.dataclass
class ModelConfig:
    actor_layers: list[int] = _field([64, 64], "Hidden layer widths of the policy network.", item_low=1)
    value_layers: list[int] = _field([64, 64], "Hidden layer widths of the value network.", item_low=1)
    activation: str = _field("tanh", "Hidden activation; tanh is PPO's usual choice for control tasks.",
                             choices=["tanh", "relu", "elu", "gelu"])
    init_log_std: float = _field(0.0, "Initial log standard deviation of a Gaussian policy (Box actions).")


@dataclasses.dataclass
class TrainConfig:
    total_env_steps: int = _field(100_000, "Budget of environment steps, summed over all environments.", low=1)
    rollout_steps: int = _field(128, "Steps per environment per iteration (rollout length).", low=1)
    num_epochs: int = _field(10, "Passes over each rollout.", low=1)
    num_minibatches: int = _field(4, "Minibatches per epoch; must divide num_envs * rollout_steps.", low=1)
    learning_rate: float = _field(3e-4, "Adam learning rate at the start.", low=0.0, low_open=True)
    lr_schedule: str = _field("constant", "constant, or linear decay to 0 over total_env_steps.",
                              choices=["constant", "linear"])
    clip_ratio: float = _field(0.2, "PPO's epsilon: the probability ratio is clipped to [1-eps, 1+eps].",
                               low=0.0, low_open=True, high=1.0)
    value_clip: Optional[float] = _field(None, "Clip value predictions to +-this around the rollout's values in the "
                                         "value loss (SB3's clip_range_vf); null: off.", low=0.0, low_open=True)
    gamma: float = _field(0.99, "Discount factor.", low=0.0, high=1.0)
    gae_lambda: float = _field(0.95, "GAE lambda (1 = Monte Carlo returns, 0 = one-step TD).", low=0.0, high=1.0)
    entropy_coef: float = _field(0.0, "Weight of the entropy bonus.", low=0.0)
    value_coef: float = _field(0.5, "Weight of the value loss, the mean squared error with no 1/2 (SB3's vf_coef; the "
                               "same convention as ppo.value_coef).", low=0.0, low_open=True)
    max_grad_norm: Optional[float] = _field(0.5, "Global gradient-norm clip; null disables it.",
                                            low=0.0, low_open=True)
    normalize_observations: bool = _field(True, "Running mean/std observation normaliser, saved inside the policy.")
    reward_scale: float = _field(1.0, "Rewards are multiplied by this for learning (reported returns are raw).",
                                 low=0.0, low_open=True)
    normalize_advantages: bool = _field(True, "Whiten advantages over each rollout, before minibatches are cut "
                                        "(TF-Agents and TRL; SB3 and CleanRL whiten each minibatch).")
    target_kl: Optional[float] = _field(
        None, "Early stop: end an iteration's epochs once a minibatch's approximate KL (k3) to the rollout's policy "
              "exceeds 1.5 x this, before its step (Stable-Baselines3's rule); null: always run every epoch.",
        low=0.0, low_open=True)
    adam_epsilon: float = _field(1e-5, "Adam epsilon (1e-5 as in the PPO reference implementations).",
                                 low=0.0, low_open=True)
    checkpoint_every: int = _field(10, "Iterations between checkpoints (and one at the end).", low=1)
    log_every: int = _field(1, "Iterations between TensorBoard train summaries.", low=1)
    warm_start: Optional[str] = _field(
        None, "Start a new run's agent (networks, observation normaliser, the optimizer's moments; not the env-step "
              "counters or RNG) from another run: a serving base's model folder (its newest version: the one served), a version folder, or a run "
              "directory (its latest checkpoint); same env, model and normaliser setting. Ignored once the run "
              "has a checkpoint of its own.")
    stop_at_return: Optional[float] = _field(
        None, "Stop early once the last 50 training episodes and a greedy evaluation (evaluate.episodes) both "
              "average at least this; null trains the whole budget.")


@dataclasses.dataclass
class EvaluateConfig:
    episodes: int = _field(10, "Greedy episodes to run.", low=1)
    seed: int = _field(10_000, "Seed of the evaluation environment (kept apart from training seeds).", low=0)


@dataclasses.dataclass
class ExportConfig:
    model_name: Optional[str] = _field(None, "TF Serving model name; null: the environment id, lower-cased (gym) "
                                             "or lm_policy (lm).")
    version: Optional[int] = _field(None, "Version directory; null takes the next integer after the newest (TF "
                                    "Serving serves the highest).", low=1)
    base_dir: Optional[str] = _field(None, "A TF Serving model base shared by runs (a nightly job's): versions rise "
                                     "across runs, numbered under a file lock, with a models.config there; null: "
                                     "RUN_DIR/export.")
    keep_versions: Optional[int] = _field(None, "After publishing, keep only the newest this-many versions of the "
                                          "model (never the one just published); null: keep all.", low=1)
    bless_tolerance: Optional[float] = _field(
        None, "Blessing: publish only if the candidate scores at least the version now served minus this, both "
              "scored now on the same work (gym: mean greedy return on the evaluation episodes; lm: mean "
              "reward.function on the held-out evaluation prompts, one sampling seed); not published: exit 3. "
              "null (and bless_floor null): publish every run.", low=0.0)
    bless_floor: Optional[float] = _field(None, "Blessing: publish only if the candidate scores at least this (also "
                                          "when nothing is served yet); null: no floor.")


@dataclasses.dataclass
class DistributeConfig:
    strategy: str = _field("auto", "tf.distribute engine: none (one device), mirrored (every GPU of this host; on a "
                           "CPU-only host, cpu_replicas logical CPUs), multi_worker (one process per host, the "
                           "cluster from TF_CONFIG or Slurm); auto: multi_worker when TF_CONFIG names a cluster, "
                           "mirrored when several GPUs are visible, else none. Batch sizes in this config are "
                           "totals, split over the replicas.", choices=["auto", "none", "mirrored", "multi_worker"])
    cpu_replicas: int = _field(2, "With strategy mirrored and no GPU: the host's CPU split into this many logical "
                               "devices (to try data parallelism, and for tests; no faster than one).", low=1,
                               high=64)


# === Language-model fine-tuning (task: lm) ===

@dataclasses.dataclass
class LMDataConfig:
    corpus: str = _field("/usr/share/games/fortunes", "A file or folder of text. The default is Debian's `fortunes` "
                         "quotes (apt-get install fortunes, or fortunes-min for 100 KB).")
    format: str = _field("fortune", "text: a document per line; fortune: %-separated entries; jsonl: one JSON "
                         "object per line.", choices=["text", "fortune", "jsonl"])
    field: str = _field("text", "With format jsonl: the key holding the text.")
    max_documents: Optional[int] = _field(None, "Use at most this many documents (null: all).", low=1)
    vocabulary_size: int = _field(512, "Byte-level BPE vocabulary trained on the corpus (>= 257: 256 bytes + EOS).",
                                  low=257)
    sequence_length: int = _field(64, "Tokens per SFT example (document + EOS, cut or padded).", low=4)
    prompt_tokens: int = _field(8, "Prompts are the first this-many tokens of documents; with data.prompts, the "
                                "longest prompt kept (longer ones are left out, and counted in TensorBoard).", low=1)
    prompts: Optional[str] = _field(None, "A JSONL file of prompts (one JSON object per line, the text under "
                                    "data.prompt_field) for PPO and evaluation, split by validation_fraction; null: "
                                    "prompts are the first prompt_tokens tokens of corpus documents.")
    prompt_field: str = _field("prompt", "With data.prompts: the key holding each prompt (TRL's datasets use "
                               "\"prompt\").")
    validation_fraction: float = _field(0.1, "Documents held out for perplexity, prompts and evaluation.",
                                        low=0.0, low_open=True, high=0.5)
    seed: int = _field(0, "Seeds the split, initialisation, sampling and shuffles.", low=0)


@dataclasses.dataclass
class LMModelConfig:
    checkpoint: Optional[str] = _field(
        None, "A local checkpoint directory to start from, with its own tokenizer: a keras-hub preset (what "
              "save_to_preset writes, e.g. a run's RUN_DIR/preset) or a Hugging Face checkpoint (config.json, "
              "model.safetensors or its index, the tokenizer's files) of GPT-2, Llama 2/3, Mistral or Qwen 2/3 "
              "(data.vocabulary_size and the sizes below are then unused); null: a GPT-2 of the sizes below trained "
              "from scratch, with a tokenizer trained on the corpus.")
    num_layers: int = _field(2, "From scratch: GPT-2 transformer layers.", low=1)
    num_heads: int = _field(2, "From scratch: attention heads (must divide hidden_dim).", low=1)
    hidden_dim: int = _field(64, "From scratch: width of the residual stream.", low=1)
    intermediate_dim: int = _field(256, "From scratch: width of each feed-forward block (GPT-2: 4 x hidden_dim).",
                                   low=1)
    max_sequence_length: int = _field(64, "Positions the run works within: data.sequence_length and "
                                      "data.prompt_tokens + ppo.max_new_tokens must fit, and a checkpoint's own "
                                      "position limit must hold them (fixed for a run directory).", low=2)
    precision: str = _field("float32", "Keras dtype policy: float32, or mixed_bfloat16 (bfloat16 compute, float32 "
                            "weights; fast on recent GPUs, slow on CPUs without bfloat16 units).",
                            choices=["float32", "mixed_bfloat16"])
    lora_rank: Optional[int] = _field(
        None, "Set: PPO trains rank-r LoRA adapters (keras-hub's enable_lora) and the value head, every other weight "
              "frozen; the reference is the same network with its adapters off (no copy), checkpoints hold the "
              "adapters only, the export merges them. null: PPO trains every weight (SFT always does).", low=1)
    lora_alpha: Optional[float] = _field(None, "With lora_rank: adapters are scaled lora_alpha / lora_rank (null: "
                                         "lora_alpha = lora_rank, a scale of 1, as keras-hub's).", low=0.0,
                                         low_open=True)
    lora_targets: list[str] = _field(["query", "value"], "With lora_rank: the layers that get adapters (keras-hub's "
                                     "names; its default is query and value, as in the LoRA paper; GPT-2 has no "
                                     "feedforward_gate_dense).", choices=list(TARGETS))


@dataclasses.dataclass
class SFTConfig:
    epochs: int = _field(3, "Passes over the training documents.", low=0)
    batch_size: int = _field(32, "Documents per step.", low=1)
    learning_rate: float = _field(1e-3, "Adam learning rate.", low=0.0, low_open=True)


@dataclasses.dataclass
class RewardConfig:
    function: str = _field("pipeline.lm.rewards:vader_sentiment",
                           "module:function taking (prompts, completions) lists of strings, returning one score each. "
                           "With kind scorer PPO maximises it; with kind learned it ranks the built preference pairs "
                           "and is the gold reward evaluation reports.")
    kind: str = _field("scorer", "scorer: PPO's reward is `function`; learned: a reward model trained on preference "
                       "pairs (Bradley-Terry) is PPO's proxy reward, `function` the gold one.",
                       choices=["scorer", "learned"])
    preferences: Optional[str] = _field(None, "With kind learned: a JSONL file of {prompt, chosen, rejected} strings; "
                                        "null builds pairs from two SFT samples per training prompt ranked by "
                                        "`function` (ties dropped).")
    pairs: int = _field(2048, "With preferences null: untied pairs to build (at most 8x as many prompts are sampled).",
                        low=2)
    epochs: int = _field(2, "Passes over the training pairs (a reward model overfits fast: on a shortened demo's 2k "
                         "pairs the held-out loss rose after epoch 2; InstructGPT used 1 over far more).", low=1)
    batch_size: int = _field(32, "Pairs per step (and prompts per sampling call when building pairs).", low=1)
    learning_rate: float = _field(1e-3, "Adam learning rate of the reward model (backbone and head); on a shortened "
                                  "demo's 1k pairs 1e-3 reached ~0.75 held-out accuracy, 3e-4 ~0.63, 1e-4 chance.",
                                  low=0.0, low_open=True)
    validation_fraction: float = _field(0.1, "Pairs held out for the reported pair accuracy.",
                                        low=0.0, low_open=True, high=0.5)
    jit_compile: bool = _field(True, "XLA-compile the reward model's training step and scoring (compiling takes "
                               "~10 s; worth it beyond tiny runs).")


@dataclasses.dataclass
class LMPPOConfig:
    iterations: int = _field(100, "PPO iterations (one batch of prompts each).", low=0)
    batch_size: int = _field(32, "Prompts per iteration.", low=1)
    max_new_tokens: int = _field(24, "Tokens sampled per response (an EOS ends it earlier).", low=1)
    temperature: float = _field(1.0, "Sampling temperature; scoring uses the same distribution.",
                                low=0.0, low_open=True)
    top_k: int = _field(0, "Sample from the k likeliest tokens only (0: all, as TRL's PPO samples); PPO scores the "
                        "policy and the reference on each position's kept set, fixed when the batch is scored (a "
                        "batch x tokens x vocabulary bool mask held through the update).", low=0)
    top_p: float = _field(1.0, "Sample from the smallest set holding this much probability (1: all); scored as "
                          "top_k.", low=0.0, low_open=True, high=1.0)
    learning_rate: float = _field(1e-4, "Adam learning rate of the policy and value head.", low=0.0, low_open=True)
    num_epochs: int = _field(4, "Passes over each batch.", low=1)
    num_minibatches: int = _field(1, "Minibatches per epoch; must divide batch_size.", low=1)
    gradient_accumulation_steps: int = _field(1, "Micro-batches per minibatch, gradients summed before one "
                                              "optimizer step, every token weighing the same (memory, not maths); "
                                              "must divide the minibatch.", low=1)
    reference_precision: str = _field("policy", "The frozen reference's copy of the weights: policy (as the policy's, "
                                      "model.precision), or bfloat16 (stored and computed in bfloat16: half its "
                                      "memory; the KL it gives moves a little: benchmarks/README.md). With "
                                      "model.lora_rank there is no copy.", choices=["policy", "bfloat16"])
    value_model: str = _field("shared", "shared: a value head on the policy's trunk; separate: a copy of the SFT "
                              "model with its own head (TRL's layout; twice the compute).",
                              choices=["shared", "separate"])
    clip_ratio: float = _field(0.2, "Policy ratio clip.", low=0.0, low_open=True, high=1.0)
    value_clip: float = _field(0.2, "Clip value predictions to +-this around the rollout's values in the value loss "
                               "(TRL's cliprange_value).", low=0.0, low_open=True)
    value_coef: float = _field(0.05, "Weight of the value loss, the mean squared error with no 1/2 (as "
                               "train.value_coef; TRL's loss has a 1/2, so its vf_coef 0.1 is 0.05 here).",
                               low=0.0, low_open=True)
    gamma: float = _field(1.0, "Discount over tokens.", low=0.0, high=1.0)
    gae_lambda: float = _field(0.95, "GAE lambda over tokens.", low=0.0, high=1.0)
    kl_coef: float = _field(0.05, "KL penalty coefficient (the start value when adaptive).", low=0.0)
    kl_estimator: str = _field("k1", "Per-token KL estimator: k1 (log ratio) or k3 (never negative).",
                               choices=["k1", "k3"])
    adaptive_kl_target: Optional[float] = _field(
        None, "Set: adapt kl_coef after each iteration toward this KL to the reference, per sequence (Ziegler et al.; "
              "not an early stop like train.target_kl); null: kl_coef stays fixed.", low=0.0, low_open=True)
    adaptive_kl_horizon: float = _field(10_000.0, "With adaptive_kl_target: the adaptation's horizon, in sequences.",
                                        low=0.0, low_open=True)
    whiten_rewards: bool = _field(False, "Whiten per-token rewards over each batch.")
    max_grad_norm: float = _field(1.0, "Global gradient-norm clip.", low=0.0, low_open=True)
    missing_eos_penalty: Optional[float] = _field(None, "Subtracted from the score of a response with no EOS.",
                                                  low=0.0)
    checkpoint_every: int = _field(10, "Iterations between checkpoints (and one at the end).", low=1)
    sample_every: int = _field(10, "Iterations between tables of the batch's first prompts, responses and rewards "
                               "in TensorBoard's text tab (from the first iteration; 0: never).", low=0)
    warm_start: Optional[str] = _field(
        None, "Start PPO's policy (its weights, or its LoRA adapters) and value model from another run's PPO "
              "checkpoint: a serving base's model folder (its newest version), a version folder, or a run "
              "directory; same data, model and value model. The reference stays this run's SFT model. Ignored once "
              "the run has a PPO checkpoint of its own.")
    jit_generation: bool = _field(True, "XLA-compile the sampling loop (~2.5x tokens/s here).")
    jit_update: bool = _field(True, "XLA-compile the scoring passes and each optimizer step (~1.5x on the demo's "
                              "small models; from ~100M parameters false: as fast, 1-1.4 GB less peak memory on "
                              "GPT-2 124M, benchmarks/README.md).")


@dataclasses.dataclass
class LMEvaluateConfig:
    prompts: int = _field(64, "Held-out prompts to evaluate the SFT and PPO policies on.", low=1)
    samples: int = _field(8, "Prompt/response pairs written to TensorBoard's text tab.", low=0)


class _Root:
    def to_dict(self) -> dict:
        return {"task": self.task, **dataclasses.asdict(self)}

    def flat(self) -> dict[str, Any]:
        """`section.key -> value`, the shape hparams and overrides use."""
        return {f"{s}.{k}": v for s, sec in dataclasses.asdict(self).items() for k, v in sec.items()}


@dataclasses.dataclass
class Config(_Root):
    """task: gym (the default): PPO on a gymnasium environment."""
    task = "gym"
    # A checkpoint only fits the environment and networks it was made with (and the normaliser, if any).
    resume_locked = ("env", "model", "train.normalize_observations")
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)


@dataclasses.dataclass
class LMConfig(_Root):
    """task: lm: PPO fine-tuning of a causal language model (data -> sft -> ppo -> evaluate -> export)."""
    task = "lm"
    resume_locked = ("data", "model", "ppo.value_model")  # the tokenizer, the networks and their checkpoints
    data: LMDataConfig = dataclasses.field(default_factory=LMDataConfig)
    model: LMModelConfig = dataclasses.field(default_factory=LMModelConfig)
    sft: SFTConfig = dataclasses.field(default_factory=SFTConfig)
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    ppo: LMPPOConfig = dataclasses.field(default_factory=LMPPOConfig)
    evaluate: LMEvaluateConfig = dataclasses.field(default_factory=LMEvaluateConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)


TASKS = {"gym": Config, "lm": LMConfig}


# === Loading ===

# Keys renamed on 2026-12-02 (issue 12): a config naming the old key gets an error naming the new one.
RENAMED = {"ppo.kl_target": "ppo.adaptive_kl_target", "ppo.kl_horizon": "ppo.adaptive_kl_horizon",
           "ppo.clip_value": "ppo.value_clip"}


def load(path: str | Path, overrides: list[str] = (), run_directory: bool = False) -> Config | LMConfig:
    """Reads a YAML file, applies `key.path=value` overrides, validates everything.

    run_directory: the file is a run directory's resolved config.yaml, perhaps written before a key was renamed
    or a meaning changed; it is brought up to date (`_upgrade`) so the run resumes with the same maths."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    if run_directory:
        _upgrade(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. train.total_env_steps=200000")
        override(raw, key, yaml.safe_load(text) if text.strip() else None)
    return from_dict(raw)


def override(raw: dict, key: str, value) -> None:
    """Sets `section.key` in a YAML-shaped config dict (from_dict checks the value with the rest)."""
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {key!r}: the key path must be section.key, e.g. train.total_env_steps")
    if raw.get(parts[0]) is None:
        raw[parts[0]] = {}
    if not isinstance(raw[parts[0]], dict):
        raise ConfigError(f"{parts[0]}: must be a mapping")
    raw[parts[0]][parts[1]] = value


def _upgrade(raw: dict) -> None:
    """A resolved LM config from before 2026-12-02 (it has every key, among them ppo.clip_value): the renamed keys
    take their new names; ppo.value_coef is halved, as the value loss lost its 1/2 (the same step as before); and
    model.max_sequence_length, which was derived, is written out as it was derived."""
    ppo, model, data = (raw.get(section) for section in ("ppo", "model", "data"))
    if raw.get("task") != "lm" or not isinstance(ppo, dict) or "clip_value" not in ppo:
        return
    for old, new in RENAMED.items():
        key, new_key = old.split(".")[1], new.split(".")[1]
        if key in ppo:
            ppo[new_key] = ppo.pop(key)
    if isinstance(ppo.get("value_coef"), (int, float)):
        ppo["value_coef"] = ppo["value_coef"] / 2
    if isinstance(model, dict) and isinstance(data, dict) and "max_sequence_length" not in model:
        model["max_sequence_length"] = max(data.get("sequence_length", 64),
                                           data.get("prompt_tokens", 8) + ppo.get("max_new_tokens", 24))


def from_dict(raw: dict) -> Config | LMConfig:
    raw = dict(raw)
    task = raw.pop("task", "gym")
    if task not in TASKS:
        raise ConfigError(f"task: {task!r} is not allowed; allowed values: {', '.join(TASKS)}")
    root = TASKS[task]
    sections = {}
    for section, value in raw.items():
        sec_field = {f.name: f for f in dataclasses.fields(root)}.get(section)
        if sec_field is None:
            raise ConfigError(f"unknown section {section!r} for task {task}; allowed sections: {_names(root)}")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{section}: must be a mapping of keys, got {value!r}")
        sections[section] = _build_section(section, sec_field.default_factory, value)
    cfg = root(**sections)
    if isinstance(cfg, LMConfig) and cfg.model.checkpoint is not None:  # absolute: a run may resume from elsewhere
        cfg.model.checkpoint = str(Path(cfg.model.checkpoint).expanduser().resolve())
    if cfg.export.base_dir is not None:
        cfg.export.base_dir = str(Path(cfg.export.base_dir).expanduser().resolve())
    _check_cross_field(cfg)
    return cfg


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def annotated_yaml(cfg) -> str:
    """The resolved config as YAML, every key with its documentation and allowed values as a comment: what
    `python -m pipeline check` prints. Comments aside, it loads back to the same config."""
    lines = [f"task: {cfg.task}  # {type(cfg).__doc__}"]
    for section in dataclasses.fields(cfg):
        lines.append(f"{section.name}:")
        values = getattr(cfg, section.name)
        for f in dataclasses.fields(values):
            text = yaml.safe_dump(getattr(values, f.name), default_flow_style=True).strip()
            text = text.removesuffix("\n...")  # the document-end marker YAML puts after a lone scalar
            lines.append(f"  {f.name}: {text}  # {f.metadata['doc']}{_allowed(f.metadata)}")
    return "\n".join(lines) + "\n"


def _allowed(meta) -> str:
    parts = []
    if meta["choices"] is not None:
        parts.append("one of " + ", ".join(meta["choices"]))
    if meta["low"] is not None:
        parts.append(f"{'>' if meta['low_open'] else '>='} {meta['low']}")
    if meta["high"] is not None:
        parts.append(f"<= {meta['high']}")
    if meta["item_low"] is not None:
        parts.append(f"each >= {meta['item_low']}")
    return f" [{'; '.join(parts)}]" if parts else ""


def _names(cls) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _build_section(section: str, cls, values: dict):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            if f"{section}.{key}" in RENAMED:
                raise ConfigError(f"{section}.{key} is now {RENAMED[f'{section}.{key}']} (renamed; see the README's "
                                  f"Conventions)")
            raise ConfigError(f"unknown key {section}.{key!s}; allowed keys in {section}: {_names(cls)}")
        kwargs[key] = _check_value(f"{section}.{key}", value, hints[key], fields[key].metadata)
    return cls(**kwargs)


def _check_value(path: str, value, hint, meta):
    optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path}: must not be null ({meta['doc']})")
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
    elif base is float:
        if isinstance(value, str):  # PyYAML reads YAML 1.1, where 3e-4 (no dot) is a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        value = float(value)
    elif base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
    elif base is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{path}: expected a mapping of names to values, e.g. {{continuous: true}}, got "
                              f"{value!r}")
        return value
    elif typing.get_origin(base) is list:
        item = typing.get_args(base)[0]
        kind, example = ("integers", "[64, 64]") if item is int else ("names", "[query, value]")
        if (not isinstance(value, list)
                or not all(isinstance(v, item) and not isinstance(v, bool) for v in value)):
            raise ConfigError(f"{path}: expected a list of {kind}, e.g. {example}, got {value!r}")
        if meta["item_low"] is not None and any(v < meta["item_low"] for v in value):
            raise ConfigError(f"{path}: every entry must be >= {meta['item_low']}, got {value!r}")
        if meta["choices"] is not None and any(v not in meta["choices"] for v in value):
            wrong = next(v for v in value if v not in meta["choices"])
            raise ConfigError(f"{path}: {wrong!r} is not allowed; allowed values: {', '.join(meta['choices'])}")
        return value
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{path}: {value!r} is not allowed; allowed values: {', '.join(meta['choices'])}")
    low, high = meta["low"], meta["high"]
    if low is not None and (value <= low if meta["low_open"] else value < low):
        raise ConfigError(f"{path}: {value!r} is out of range; must be {'>' if meta['low_open'] else '>='} {low}"
                          + (f" and <= {high}" if high is not None else ""))
    if high is not None and value > high:
        raise ConfigError(f"{path}: {value!r} is out of range; must be <= {high}")
    return value


def _check_cross_field(cfg) -> None:
    if isinstance(cfg, LMConfig):
        if cfg.ppo.batch_size % cfg.ppo.num_minibatches:
            raise ConfigError(f"ppo.num_minibatches: {cfg.ppo.num_minibatches} does not divide ppo.batch_size "
                              f"{cfg.ppo.batch_size}; allowed values: its divisors")
        minibatch = cfg.ppo.batch_size // cfg.ppo.num_minibatches
        if minibatch % cfg.ppo.gradient_accumulation_steps:
            raise ConfigError(f"ppo.gradient_accumulation_steps: {cfg.ppo.gradient_accumulation_steps} does not "
                              f"divide the minibatch ppo.batch_size / ppo.num_minibatches = {minibatch}; "
                              f"allowed values: its divisors")
        positions = cfg.model.max_sequence_length
        if cfg.data.sequence_length > positions:
            raise ConfigError(f"data.sequence_length: {cfg.data.sequence_length} does not fit "
                              f"model.max_sequence_length {positions}; allowed values: 4 to {positions} (or raise "
                              f"model.max_sequence_length, in a new run directory)")
        if cfg.data.prompt_tokens >= positions:
            raise ConfigError(f"data.prompt_tokens: {cfg.data.prompt_tokens} leaves no room for a response in "
                              f"model.max_sequence_length {positions}; allowed values: 1 to {positions - 1}")
        if cfg.data.prompt_tokens + cfg.ppo.max_new_tokens > positions:
            raise ConfigError(f"ppo.max_new_tokens: {cfg.ppo.max_new_tokens} does not fit: data.prompt_tokens "
                              f"({cfg.data.prompt_tokens}) + ppo.max_new_tokens must be <= model.max_sequence_length "
                              f"({positions}); allowed values: 1 to {positions - cfg.data.prompt_tokens} (or raise "
                              f"model.max_sequence_length, in a new run directory)")
        if cfg.model.hidden_dim % cfg.model.num_heads:
            raise ConfigError(f"model.num_heads: {cfg.model.num_heads} does not divide model.hidden_dim "
                              f"{cfg.model.hidden_dim}; allowed values: its divisors")
        if cfg.model.lora_rank is not None and not cfg.model.lora_targets:
            raise ConfigError(f"model.lora_targets: empty; with model.lora_rank set, name the layers to adapt; "
                              f"allowed values: {', '.join(TARGETS)}")
        if cfg.reward.preferences is not None and cfg.reward.kind != "learned":
            raise ConfigError(f"reward.preferences: set, but reward.kind is {cfg.reward.kind!r}; preference pairs "
                              f"train a reward model: set reward.kind: learned, or drop reward.preferences")
        return
    batch = cfg.env.num_envs * cfg.train.rollout_steps
    if batch % cfg.train.num_minibatches:
        raise ConfigError(
            f"train.num_minibatches: {cfg.train.num_minibatches} does not divide the rollout batch "
            f"env.num_envs * train.rollout_steps = {batch}; allowed values: divisors of {batch}")
