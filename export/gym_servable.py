"""The servable: a tf.Module whose `serving_default` takes only a batch of observations.

TF-Agents' PolicySaver signature wants step_type, reward, discount and observation; a TF Serving client has
only observations: one named input (`observations`), or one per key of a Dict observation (an action mask among
them), each in the environment's dtype (uint8 frames stay uint8). The observation normaliser and the mask live
inside the policy, so they are inside this graph too.
"""

from __future__ import annotations

import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from export import tf_serving


class PolicyServingModule(tf.Module):
    """Outputs: `action` (greedy), `value`, and `logits` (Discrete) or `mean` and `std` (Box)."""

    def __init__(self, greedy_policy, sampling_policy, observation_spec, discrete: bool):
        """observation_spec: a batch of the policy's observations (a TensorSpec [None, ...], or a dict of them)."""
        super().__init__(name="policy_serving")
        self.greedy_policy, self.sampling_policy, self.discrete = greedy_policy, sampling_policy, discrete
        self.is_dict = isinstance(observation_spec, dict)
        named = observation_spec if self.is_dict else {tf_serving.OBSERVATIONS: observation_spec}
        specs = {k: tf.TensorSpec(spec.shape, spec.dtype, name=k) for k, spec in named.items()}
        self.serve = tf.function(self._serve, input_signature=[specs], autograph=False)

    def _serve(self, inputs):
        observations = inputs if self.is_dict else inputs[tf_serving.OBSERVATIONS]
        batch = tf.shape(next(iter(inputs.values())))[0]
        time_step = ts.TimeStep(
            step_type=tf.fill([batch], ts.StepType.MID),
            reward=tf.zeros([batch]),
            discount=tf.ones([batch]),
            observation=observations,
        )
        dist = self.sampling_policy.distribution(time_step).action
        value, _ = self.sampling_policy.apply_value_network(observations, time_step.step_type, value_state=())
        outputs = {"action": self.greedy_policy.action(time_step).action, "value": value}
        if self.discrete:
            # [batch, values], or [batch, dims, values] for several actions (an Independent over each dimension's)
            outputs["logits"] = getattr(dist, "distribution", dist).logits_parameter()
        else:
            outputs["mean"], outputs["std"] = dist.mean(), dist.stddev()
        return outputs

    def save(self, path: str) -> None:
        tf.saved_model.save(self, path, signatures={"serving_default": self.serve})
        tf_serving.drop_cluster_devices(path)
