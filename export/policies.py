"""Loading an export as TF Serving loads it (the SavedModel, nothing of the code that trained it), for the Python
API (`pipeline.load_policy`), blessing's scores and the tests: a gym policy (observations in, greedy actions out)
or a language policy (prompts in, completions out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export import tf_serving


class Policy:
    """A trained gym policy from its export: observations in (one, or a batch; a dict of named arrays for a Dict
    observation), greedy actions out, as the served `serving_default` answers (`outputs` gives its value and logits,
    or mean and std, too)."""

    def __init__(self, signature, saved_model=None):
        self.signature = signature  # serving_default itself: named observation inputs -> action, value, ...
        self.inputs = signature.structured_input_signature[1]  # name -> TensorSpec [None, ...]
        # The loaded SavedModel owns the variables: a function that calls the signature inside its own graph
        # (blessing's episode runner) holds them only weakly.
        self._saved_model = saved_model

    @staticmethod
    def named(observations) -> dict:
        """The signature's inputs for an observation as the policy takes it (an array, or a dict of them)."""
        return dict(observations) if isinstance(observations, dict) else {tf_serving.OBSERVATIONS: observations}

    def outputs(self, observations) -> dict:
        given = self.named(observations)
        if set(given) != set(self.inputs):
            raise ValueError(f"observation keys {sorted(given)}; this policy takes {sorted(self.inputs)}")
        batch, single = {}, set()
        for name, spec in self.inputs.items():
            value, rank = np.asarray(given[name]), spec.shape.rank - 1
            single.add(value.ndim == rank)
            value = value[None] if value.ndim == rank else value
            if value.ndim != rank + 1 or not spec.shape[1:].is_compatible_with(value.shape[1:]):
                raise ValueError(
                    f"observation {name!r} of shape {value.shape}; this policy takes {spec.shape[1:].as_list()} "
                    f"(or a batch of them)"
                )
            batch[name] = _as_dtype(name, value, spec.dtype.as_numpy_dtype)
        if len(single) > 1:
            raise ValueError("some observation parts are batched and some are not; give all of them one way")
        out = self.signature(**batch)
        one = single.pop()
        return {k: v.numpy()[0] if one else v.numpy() for k, v in out.items()}

    def __call__(self, observations) -> np.ndarray:
        return self.outputs(observations)["action"]


def _as_dtype(name: str, value: np.ndarray, dtype) -> np.ndarray:
    """value in the input's dtype; ValueError where that would change it (3.5 as a uint8 frame, 300 as one)."""
    if value.dtype == dtype:
        return value
    if not np.can_cast(value.dtype, dtype, "same_kind") and not (
        value.dtype == bool or (np.issubdtype(value.dtype, np.integer) and np.issubdtype(dtype, np.floating))
    ):
        raise ValueError(f"observation {name!r} is {value.dtype}; this policy takes {np.dtype(dtype).name}")
    if np.issubdtype(dtype, np.integer) and value.size:
        info = np.iinfo(dtype)
        if value.min() < info.min or value.max() > info.max:
            raise ValueError(f"observation {name!r} has values outside {np.dtype(dtype).name}'s range")
    return value.astype(dtype)


class LanguagePolicy:
    """A trained LM policy from its export: prompts in, completions out, as the served signature answers."""

    def __init__(self, signature, defaults: dict):
        self._serve, self._defaults = signature, defaults

    def __call__(self, prompts, **settings) -> str | list[str]:
        """settings: max_new_tokens, temperature (0: greedy), seed (-1: a fresh one); what is not given takes the
        SignatureDef's default, as TF Serving fills it in (the training run's sampling settings)."""
        import tensorflow as tf

        single = isinstance(prompts, str)
        inputs = {"prompts": tf.constant([prompts] if single else list(prompts))}
        for name, default in self._defaults.items():
            inputs[name] = tf.constant(settings.pop(name, default), tf.as_dtype(default.dtype))
        if settings:
            raise TypeError(f"unknown settings {sorted(settings)}; allowed: {sorted(self._defaults)}")
        texts = [t.decode() for t in self._serve(**inputs)["completions"].numpy()]
        return texts[0] if single else texts


def load_policy(path: str | Path) -> Policy | LanguagePolicy:
    """The policy of a run directory (its latest export), a model folder (its latest version) or a version folder,
    loaded as TF Serving loads it (the SavedModel, nothing of this project's code)."""
    import tensorflow as tf

    version_dir = _version_dir(Path(path))
    saved_model = tf.saved_model.load(str(version_dir))
    signature = saved_model.signatures["serving_default"]
    if "prompts" not in signature.structured_input_signature[1]:
        return Policy(signature, saved_model)
    return LanguagePolicy(signature, _signature_defaults(version_dir, "serving_default"))


def _signature_defaults(version_dir: Path, key: str) -> dict:
    """The optional inputs' defaults a SignatureDef holds (TF Serving applies them; a loaded function does not)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    return {name: tf.make_ndarray(value) for name, value in saved.meta_graphs[0].signature_def[key].defaults.items()}


def _version_dir(path: Path) -> Path:
    if (path / "saved_model.pb").exists():
        return path
    if (path / "config.yaml").exists():  # a run directory: its one exported model
        models = [p for p in (path / "export").glob("*") if tf_serving.versions(p)]
        if len(models) != 1:
            raise FileNotFoundError(
                f"{path}: a run directory with {len(models)} exported models; export it first "
                f"(pipeline.export) or name the version folder"
            )
        path = models[0]
    versions = tf_serving.versions(path)
    if not versions:
        raise FileNotFoundError(f"{path}: no SavedModel version folder here")
    return path / str(versions[-1])
