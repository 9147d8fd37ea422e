"""The config module's old address, kept so that code written before the reorganisation still runs (the README
of that time told notebooks to catch `pipeline.config.ConfigError`): new code imports `pipeline.ConfigError` and
`pipeline.load_config`, or pipeline/core/config.py and each task's config module."""

from pipeline.core.config import annotated_yaml, from_dict, load, override, reference, to_yaml
from pipeline.core.schema import ConfigError
from pipeline.core.sections import DistributeConfig, ExportConfig
from pipeline.gym.config import EnvConfig, EvaluateConfig, GymConfig, ModelConfig, TrainConfig
from pipeline.lm.config import (
    LMConfig,
    LMDataConfig,
    LMEvaluateConfig,
    LMModelConfig,
    LMPPOConfig,
    RewardConfig,
    SFTConfig,
)

Config = GymConfig  # its old name

__all__ = [
    "Config",
    "ConfigError",
    "DistributeConfig",
    "EnvConfig",
    "EvaluateConfig",
    "ExportConfig",
    "GymConfig",
    "LMConfig",
    "LMDataConfig",
    "LMEvaluateConfig",
    "LMModelConfig",
    "LMPPOConfig",
    "ModelConfig",
    "RewardConfig",
    "SFTConfig",
    "TrainConfig",
    "annotated_yaml",
    "from_dict",
    "load",
    "override",
    "reference",
    "to_yaml",
]
