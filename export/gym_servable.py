"""The servable: a tf.Module whose `serving_default` takes only a batch of observations.

TF-Agents' PolicySaver signature wants step_type, reward, discount and observation; a TF Serving client has
only observations. The observation normaliser lives inside the policy, so it is inside this graph too.
"""

from __future__ import annotations

import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from export import tf_serving

SIGNATURE_INPUT = "observations"


class PolicyServingModule(tf.Module):
    """Outputs: `action` (greedy), `value`, and `logits` (Discrete) or `mean` and `std` (Box)."""

    def __init__(self, greedy_policy, sampling_policy, observation_shape, discrete: bool):
        super().__init__(name="policy_serving")
        self.greedy_policy, self.sampling_policy, self.discrete = greedy_policy, sampling_policy, discrete
        spec = tf.TensorSpec([None, *observation_shape], tf.float32, name=SIGNATURE_INPUT)
        self.serve = tf.function(self._serve, input_signature=[spec], autograph=False)

    def _serve(self, observations):
        batch = tf.shape(observations)[0]
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
            outputs["logits"] = dist.logits_parameter()
        else:
            outputs["mean"], outputs["std"] = dist.mean(), dist.stddev()
        return outputs

    def save(self, path: str) -> None:
        tf.saved_model.save(self, path, signatures={"serving_default": self.serve})
        tf_serving.drop_cluster_devices(path)
