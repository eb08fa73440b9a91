"""The training engine both model families share: options, run folders, the step loop, tf.distribute."""
