"""Examples of other RL libraries driving the nas_gym envs through the public Gymnasium API."""
