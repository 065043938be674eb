"""steprl: RL for tool-using language-model agents, where every sample can be drawn again."""

__version__ = "0.1.0"
