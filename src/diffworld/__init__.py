"""diffworld: DIAMOND, a reinforcement-learning agent trained inside a diffusion world model."""

__version__ = "0.1.0"
