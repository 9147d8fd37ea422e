"""The lm task's config: data, model, sft, reward, ppo and evaluate sections, with the shared export and distribute."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from models.lora import TARGETS
from pipeline.core.schema import ConfigError, TaskConfig, option
from pipeline.core.sections import DistributeConfig, ExportConfig


@dataclasses.dataclass
class LMDataConfig:
    corpus: str = option(
        "/usr/share/games/fortunes",
        "A file or folder of text. The default is Debian's `fortunes` "
        "quotes (apt-get install fortunes, or fortunes-min for 100 KB).",
    )
    format: str = option(
        "fortune",
        "text: a document per line; fortune: %-separated entries; jsonl: one JSON object per line.",
        choices=["text", "fortune", "jsonl"],
    )
    field: str = option("text", "With format jsonl: the key holding the text.")
    max_documents: int | None = option(None, "Use at most this many documents (null: all).", low=1)
    vocabulary_size: int = option(
        512, "Byte-level BPE vocabulary trained on the corpus (>= 257: 256 bytes + EOS).", low=257
    )
    sequence_length: int = option(64, "Tokens per SFT example (document + EOS, cut or padded).", low=4)
    prompt_tokens: int = option(
        8,
        "Prompts are the first this-many tokens of documents; with data.prompts, the "
        "longest prompt kept (longer ones are left out, and counted in TensorBoard).",
        low=1,
    )
    prompts: str | None = option(
        None,
        "A JSONL file of prompts (one JSON object per line, the text under "
        "data.prompt_field) for PPO and evaluation, split by validation_fraction; null: "
        "prompts are the first prompt_tokens tokens of corpus documents.",
    )
    prompt_field: str = option(
        "prompt", 'With data.prompts: the key holding each prompt (TRL\'s datasets use "prompt").'
    )
    validation_fraction: float = option(
        0.1, "Documents held out for perplexity, prompts and evaluation.", low=0.0, low_open=True, high=0.5
    )
    seed: int = option(0, "Seeds the split, initialisation, sampling and shuffles.", low=0)


@dataclasses.dataclass
class LMModelConfig:
    checkpoint: str | None = option(
        None,
        "A local checkpoint directory to start from, with its own tokenizer: a keras-hub preset (what "
        "save_to_preset writes, e.g. a run's RUN_DIR/preset) or a Hugging Face checkpoint (config.json, "
        "model.safetensors or its index, the tokenizer's files) of GPT-2, Llama 2/3, Mistral or Qwen 2/3 "
        "(data.vocabulary_size and the sizes below are then unused); null: a GPT-2 of the sizes below trained "
        "from scratch, with a tokenizer trained on the corpus.",
    )
    num_layers: int = option(2, "From scratch: GPT-2 transformer layers.", low=1)
    num_heads: int = option(2, "From scratch: attention heads (must divide hidden_dim).", low=1)
    hidden_dim: int = option(64, "From scratch: width of the residual stream.", low=1)
    intermediate_dim: int = option(
        256, "From scratch: width of each feed-forward block (GPT-2: 4 x hidden_dim).", low=1
    )
    max_sequence_length: int = option(
        64,
        "Positions the run works within: data.sequence_length and "
        "data.prompt_tokens + ppo.max_new_tokens must fit, and a checkpoint's own "
        "position limit must hold them (fixed for a run directory).",
        low=2,
    )
    precision: str = option(
        "float32",
        "Keras dtype policy: float32, or mixed_bfloat16 (bfloat16 compute, float32 "
        "weights; fast on recent GPUs, slow on CPUs without bfloat16 units).",
        choices=["float32", "mixed_bfloat16"],
    )
    lora_rank: int | None = option(
        None,
        "Set: RL trains rank-r LoRA adapters of PEFT's shapes (A [in, r], B [r, out] per projection, x.A.B "
        "beside x.W) and PPO its value head, every other weight "
        "frozen; the reference is the same network with its adapters off (no copy), checkpoints hold the "
        "adapters only, the export merges them. null: PPO trains every weight (SFT always does).",
        low=1,
    )
    lora_alpha: float | None = option(
        None,
        "With lora_rank: adapters are scaled lora_alpha / lora_rank (null: lora_alpha = lora_rank, a scale of 1).",
        low=0.0,
        low_open=True,
    )
    lora_targets: list[str] = option(
        ["query", "value"],
        "With lora_rank: the layers that get adapters (keras-hub's "
        "names; its default is query and value, as in the LoRA paper; GPT-2 has no "
        "feedforward_gate_dense).",
        choices=list(TARGETS),
    )


@dataclasses.dataclass
class SFTConfig:
    epochs: int = option(3, "Passes over the training documents.", low=0)
    batch_size: int = option(32, "Documents per step.", low=1)
    learning_rate: float = option(1e-3, "Adam learning rate.", low=0.0, low_open=True)


@dataclasses.dataclass
class RewardConfig:
    function: str = option(
        "pipeline.lm.rewards:vader_sentiment",
        "module:function called as TRL calls a reward function: prompts and completions (lists of strings), "
        "completion_ids and data.prompts' other columns as keyword arguments (those it names, or all with "
        "**kwargs), returning one score (or None: does not apply) per completion. With kind scorer RL maximises "
        "it; with kind learned it ranks the built preference pairs and is the gold reward evaluation reports.",
    )
    functions: list[str] | None = option(
        None,
        "Several module:function reward functions in place of `function`, their weighted sum the reward "
        "(a None score left out of its completion's sum, as TRL's nansum); each logged as "
        "rewards/<name>/mean and /std. null: `function` alone.",
    )
    weights: list[float] | None = option(
        None, "With functions: one weight each (null: 1 each), as TRL's reward_weights."
    )
    kind: str = option(
        "scorer",
        "scorer: PPO's reward is `function`; learned: a reward model trained on preference "
        "pairs (Bradley-Terry) is PPO's proxy reward, `function` the gold one.",
        choices=["scorer", "learned"],
    )
    preferences: str | None = option(
        None,
        "With kind learned: a JSONL file of {prompt, chosen, rejected} strings; "
        "null builds pairs from two SFT samples per training prompt ranked by "
        "`function` (ties dropped).",
    )
    pairs: int = option(
        2048, "With preferences null: untied pairs to build (at most 8x as many prompts are sampled).", low=2
    )
    epochs: int = option(
        2,
        "Passes over the training pairs (a reward model overfits fast: on a shortened demo's 2k "
        "pairs the held-out loss rose after epoch 2; InstructGPT used 1 over far more).",
        low=1,
    )
    batch_size: int = option(32, "Pairs per step (and prompts per sampling call when building pairs).", low=1)
    learning_rate: float = option(
        1e-3,
        "Adam learning rate of the reward model (backbone and head); on a shortened "
        "demo's 1k pairs 1e-3 reached ~0.75 held-out accuracy, 3e-4 ~0.63, 1e-4 chance.",
        low=0.0,
        low_open=True,
    )
    validation_fraction: float = option(
        0.1, "Pairs held out for the reported pair accuracy.", low=0.0, low_open=True, high=0.5
    )
    jit_compile: bool = option(
        True,
        "XLA-compile the reward model's training step and scoring (compiling takes seconds; worth it beyond tiny "
        "runs).",
    )

    @property
    def specs(self) -> list[str]:
        """The reward functions' module:function specs: reward.functions, else reward.function."""
        return self.functions or [self.function]


ALGORITHM_DEFAULTS = {  # TRL 1.16's defaults of the keys whose default depends on ppo.algorithm
    "ppo": {"num_generations": 1, "num_epochs": 4},
    "grpo": {"num_generations": 8, "num_epochs": 1, "beta": 0.0},
    "rloo": {"num_generations": 2, "num_epochs": 1, "beta": 0.05},
}


@dataclasses.dataclass
class LMPPOConfig:
    algorithm: str = option(
        "ppo",
        "ppo: a value model, per-token KL penalty in the reward, GAE over tokens (TRL's former PPOTrainer); grpo: "
        "num_generations completions per prompt, advantages relative to their group, no value model, the KL to "
        "the reference a loss term weighted by beta (TRL's GRPOTrainer); rloo: the same groups with a "
        "leave-one-out baseline, the KL (k1) taken from the reward, the ratio of whole sequences (TRL's "
        "RLOOTrainer). docs/lm.md.",
        choices=["ppo", "grpo", "rloo"],
    )
    iterations: int = option(100, "Iterations (one batch of prompts each).", low=0)
    batch_size: int = option(
        32,
        "Completions per iteration: batch_size / num_generations prompts, each sampled num_generations times.",
        low=1,
    )
    num_generations: int | None = option(
        None,
        "Completions sampled per prompt, consecutive rows of the batch (a group); must divide batch_size. null: "
        "the algorithm's TRL default (grpo 8, rloo 2; ppo 1).",
        low=1,
    )
    scale_rewards: str = option(
        "group",
        "grpo: divide each advantage by its group's reward standard deviation (group), the batch's (batch), or "
        "not at all (none: Dr. GRPO); + 1e-4, Bessel-corrected, as TRL.",
        choices=["group", "batch", "none"],
    )
    loss_type: str = option(
        "dapo",
        "grpo: how token losses are averaged (TRL's loss_type and default): dapo, over the minibatch's tokens (no "
        "length bias); grpo, each sequence's mean then over sequences (favours short right answers and long "
        "wrong ones); bnpo, over each micro-batch's tokens; dr_grpo, the sum over sequences x max_new_tokens.",
        choices=["dapo", "grpo", "bnpo", "dr_grpo"],
    )
    beta: float | None = option(
        None,
        "grpo and rloo: weight of the KL to the reference (grpo: k3, times the ratio, a loss term; rloo: k1, "
        "summed over the sequence and taken from its reward). null: TRL's default, grpo 0 (no reference model "
        "in memory at all), rloo 0.05. ppo's is kl_coef.",
        low=0.0,
    )
    mask_truncated_completions: bool = option(
        False,
        "grpo and rloo: completions without an EOS leave the loss (they are still rewarded and count in their "
        "group's statistics), as TRL's.",
    )
    max_new_tokens: int = option(24, "Tokens sampled per response (an EOS ends it earlier).", low=1)
    temperature: float = option(
        1.0, "Sampling temperature; scoring uses the same distribution.", low=0.0, low_open=True
    )
    top_k: int = option(
        0,
        "Sample from the k likeliest tokens only (0: all, as TRL's PPO samples); PPO scores the "
        "policy and the reference on each position's kept set, fixed when the batch is scored (a "
        "batch x tokens x vocabulary bool mask held through the update).",
        low=0,
    )
    top_p: float = option(
        1.0,
        "Sample from the smallest set holding this much probability (1: all); scored as top_k.",
        low=0.0,
        low_open=True,
        high=1.0,
    )
    learning_rate: float = option(1e-4, "Adam learning rate of the policy and value head.", low=0.0, low_open=True)
    num_epochs: int | None = option(
        None,
        "Passes over each batch (TRL's GRPO num_iterations). null: the algorithm's default, ppo 4, grpo and rloo 1.",
        low=1,
    )
    num_minibatches: int = option(1, "Minibatches per epoch; must divide batch_size.", low=1)
    gradient_accumulation_steps: int = option(
        1,
        "Micro-batches per minibatch, gradients summed before one "
        "optimizer step, every token weighing the same (memory, not maths); "
        "must divide the minibatch.",
        low=1,
    )
    reference_precision: str = option(
        "policy",
        "The frozen reference's copy of the weights: policy (as the policy's, "
        "model.precision), or bfloat16 (stored and computed in bfloat16: half its "
        "memory; the KL it gives moves a little: benchmarks/README.md). With "
        "model.lora_rank there is no copy.",
        choices=["policy", "bfloat16"],
    )
    value_model: str = option(
        "shared",
        "shared: a value head on the policy's trunk; separate: a copy of the SFT "
        "model with its own head (TRL's layout; twice the compute).",
        choices=["shared", "separate"],
    )
    clip_ratio: float = option(
        0.2, "Policy ratio clip (TRL's epsilon): below 1 - clip_ratio.", low=0.0, low_open=True, high=1.0
    )
    clip_ratio_high: float | None = option(
        None,
        "grpo and rloo: the ratio's clip above 1 (TRL's epsilon_high; DAPO's clip-higher uses 0.28); null: clip_ratio.",
        low=0.0,
        low_open=True,
    )
    value_clip: float = option(
        0.2,
        "Clip value predictions to +-this around the rollout's values in the value loss (TRL's cliprange_value).",
        low=0.0,
        low_open=True,
    )
    value_coef: float = option(
        0.05,
        "Weight of the value loss, the mean squared error with no 1/2 (as "
        "train.value_coef; TRL's loss has a 1/2, so its vf_coef 0.1 is 0.05 here).",
        low=0.0,
        low_open=True,
    )
    gamma: float = option(1.0, "Discount over tokens.", low=0.0, high=1.0)
    gae_lambda: float = option(0.95, "GAE lambda over tokens.", low=0.0, high=1.0)
    kl_coef: float = option(0.05, "KL penalty coefficient (the start value when adaptive).", low=0.0)
    kl_estimator: str = option(
        "k1", "Per-token KL estimator: k1 (log ratio) or k3 (never negative).", choices=["k1", "k3"]
    )
    adaptive_kl_target: float | None = option(
        None,
        "Set: adapt kl_coef after each iteration toward this KL to the reference, per sequence (Ziegler et al.; "
        "not an early stop like train.target_kl); null: kl_coef stays fixed.",
        low=0.0,
        low_open=True,
    )
    adaptive_kl_horizon: float = option(
        10_000.0, "With adaptive_kl_target: the adaptation's horizon, in sequences.", low=0.0, low_open=True
    )
    whiten_rewards: bool = option(False, "Whiten per-token rewards over each batch.")
    max_grad_norm: float = option(1.0, "Global gradient-norm clip.", low=0.0, low_open=True)
    missing_eos_penalty: float | None = option(None, "Subtracted from the score of a response with no EOS.", low=0.0)
    checkpoint_every: int = option(10, "Iterations between checkpoints (and one at the end).", low=1)
    sample_every: int = option(
        10,
        "Iterations between tables of the batch's first prompts, responses and rewards "
        "in TensorBoard's text tab (from the first iteration; 0: never).",
        low=0,
    )
    warm_start: str | None = option(
        None,
        "Start PPO's policy (its weights, or its LoRA adapters) and value model from another run's PPO "
        "checkpoint: a serving base's model folder (its newest version), a version folder, or a run "
        "directory; same data, model, value model and algorithm. Or a PEFT LoRA adapter folder "
        "(adapter_config.json, adapter_model.safetensors) for a LoRA run on the checkpoint it adapts. The "
        "reference stays this run's SFT model. Ignored once the run has a PPO checkpoint of its own.",
    )
    jit_generation: bool = option(True, "XLA-compile the sampling loop (faster: benchmarks/README.md).")
    jit_update: bool = option(
        True,
        "XLA-compile the scoring passes and each optimizer step (faster on small models; from about 100M "
        "parameters false is as fast with less peak memory: benchmarks/README.md).",
    )

    def __post_init__(self):
        """The keys whose default depends on the algorithm take it (the resolved config holds the number)."""
        if self.algorithm == "ppo" and self.beta is not None:
            raise ConfigError("ppo.beta: set with ppo.algorithm ppo, whose KL weight is ppo.kl_coef; allowed: null")
        for key, value in ALGORITHM_DEFAULTS[self.algorithm].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.algorithm != "ppo" and self.num_generations < 2:
            raise ConfigError(
                f"ppo.num_generations: {self.num_generations} with ppo.algorithm {self.algorithm}, whose baseline "
                f"is the other completions of the prompt; allowed: 2 or more"
            )
        if self.batch_size % self.num_generations:
            raise ConfigError(
                f"ppo.num_generations: {self.num_generations} does not divide ppo.batch_size {self.batch_size} "
                f"(completions per iteration); allowed values: its divisors"
            )


@dataclasses.dataclass
class LMEvaluateConfig:
    prompts: int = option(64, "Held-out prompts to evaluate the SFT and PPO policies on.", low=1)
    samples: int = option(8, "Prompt/response pairs written to TensorBoard's text tab.", low=0)


@dataclasses.dataclass
class LMConfig(TaskConfig):
    """task: lm: PPO fine-tuning of a causal language model (data -> sft -> ppo -> evaluate -> export)."""

    task = "lm"
    resume_locked = ("data", "model", "ppo.value_model", "ppo.algorithm")  # the tokenizer, networks, checkpoints
    checkpoints = "ppo"  # beside sft/ and reward/, which train once
    # Keys renamed on 2026-12-02: a config naming the old key gets an error naming the new one.
    renamed = {
        "ppo.kl_target": "ppo.adaptive_kl_target",
        "ppo.kl_horizon": "ppo.adaptive_kl_horizon",
        "ppo.clip_value": "ppo.value_clip",
    }
    data: LMDataConfig = dataclasses.field(default_factory=LMDataConfig)
    model: LMModelConfig = dataclasses.field(default_factory=LMModelConfig)
    sft: SFTConfig = dataclasses.field(default_factory=SFTConfig)
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    ppo: LMPPOConfig = dataclasses.field(default_factory=LMPPOConfig)
    evaluate: LMEvaluateConfig = dataclasses.field(default_factory=LMEvaluateConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)

    def finish(self) -> None:
        if self.model.checkpoint is not None:  # absolute: a run may resume from elsewhere
            self.model.checkpoint = str(Path(self.model.checkpoint).expanduser().resolve())
        if self.ppo.batch_size % self.ppo.num_minibatches:
            raise ConfigError(
                f"ppo.num_minibatches: {self.ppo.num_minibatches} does not divide ppo.batch_size "
                f"{self.ppo.batch_size}; allowed values: its divisors"
            )
        minibatch = self.ppo.batch_size // self.ppo.num_minibatches
        if minibatch % self.ppo.gradient_accumulation_steps:
            raise ConfigError(
                f"ppo.gradient_accumulation_steps: {self.ppo.gradient_accumulation_steps} does not "
                f"divide the minibatch ppo.batch_size / ppo.num_minibatches = {minibatch}; "
                f"allowed values: its divisors"
            )
        positions = self.model.max_sequence_length
        if self.data.sequence_length > positions:
            raise ConfigError(
                f"data.sequence_length: {self.data.sequence_length} does not fit "
                f"model.max_sequence_length {positions}; allowed values: 4 to {positions} (or raise "
                f"model.max_sequence_length, in a new run directory)"
            )
        if self.data.prompt_tokens >= positions:
            raise ConfigError(
                f"data.prompt_tokens: {self.data.prompt_tokens} leaves no room for a response in "
                f"model.max_sequence_length {positions}; allowed values: 1 to {positions - 1}"
            )
        if self.data.prompt_tokens + self.ppo.max_new_tokens > positions:
            raise ConfigError(
                f"ppo.max_new_tokens: {self.ppo.max_new_tokens} does not fit: data.prompt_tokens "
                f"({self.data.prompt_tokens}) + ppo.max_new_tokens must be <= model.max_sequence_length "
                f"({positions}); allowed values: 1 to {positions - self.data.prompt_tokens} (or raise "
                f"model.max_sequence_length, in a new run directory)"
            )
        if self.model.hidden_dim % self.model.num_heads:
            raise ConfigError(
                f"model.num_heads: {self.model.num_heads} does not divide model.hidden_dim "
                f"{self.model.hidden_dim}; allowed values: its divisors"
            )
        if self.model.lora_rank is not None and not self.model.lora_targets:
            raise ConfigError(
                f"model.lora_targets: empty; with model.lora_rank set, name the layers to adapt; "
                f"allowed values: {', '.join(TARGETS)}"
            )
        r = self.reward
        if r.functions is not None and not r.functions:
            raise ConfigError(
                "reward.functions: empty; name at least one module:function, or null to use reward.function"
            )
        if r.weights is not None and len(r.weights) != len(r.specs):
            raise ConfigError(
                f"reward.weights: {len(r.weights)} weight{'s' if len(r.weights) != 1 else ''} for "
                f"{len(r.specs)} reward function(s); allowed: one per entry of reward.functions"
            )
        if self.reward.preferences is not None and self.reward.kind != "learned":
            raise ConfigError(
                f"reward.preferences: set, but reward.kind is {self.reward.kind!r}; preference pairs "
                f"train a reward model: set reward.kind: learned, or drop reward.preferences"
            )

    @classmethod
    def upgrade(cls, raw: dict) -> None:
        """A resolved LM config from before 2026-12-02 (it has every key, among them ppo.clip_value): the renamed keys
        take their new names; ppo.value_coef is halved, as the value loss lost its 1/2 (the same step as before); and
        model.max_sequence_length, which was derived, is written out as it was derived."""
        ppo, model, data = (raw.get(section) for section in ("ppo", "model", "data"))
        if raw.get("task") != "lm" or not isinstance(ppo, dict) or "clip_value" not in ppo:
            return
        for old, new in cls.renamed.items():
            key, new_key = old.split(".")[1], new.split(".")[1]
            if key in ppo:
                ppo[new_key] = ppo.pop(key)
        if isinstance(ppo.get("value_coef"), (int, float)):
            ppo["value_coef"] = ppo["value_coef"] / 2
        if isinstance(model, dict) and isinstance(data, dict) and "max_sequence_length" not in model:
            model["max_sequence_length"] = max(
                data.get("sequence_length", 64), data.get("prompt_tokens", 8) + ppo.get("max_new_tokens", 24)
            )
