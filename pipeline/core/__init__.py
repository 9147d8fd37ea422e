"""Shared machinery that knows no task: configuration, run directories, the job runner, tf.distribute,
preemption, summaries, publishing. Tasks (pipeline.gym, pipeline.lm) build on it; it imports none of them."""
