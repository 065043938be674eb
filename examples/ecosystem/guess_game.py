"""An OpenEnv environment: find a hidden number from 1 to 8 by its higher/lower replies.

Written against openenv-core's own `Environment` (reset/step/state); steprl plays it as `steprl/OpenEnv-v0`. The
secret is drawn from the seed it is given, so every episode is a function of that seed.
"""

import random

from openenv.core.env_server import Action, Environment, Observation, State


class GuessAction(Action):
    """A guess, as text."""

    guess: str


class GuessObservation(Observation):
    """What the game says: the task, then higher / lower / correct."""

    prompt: str = ""


class GuessEnvironment(Environment[GuessAction, GuessObservation, State]):
    """The game; reward 1 when the guess is right."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, high: int = 8):
        super().__init__()
        self.high, self.secret, self._state = high, 1, State()

    def reset(self, seed=None, episode_id=None, **kwargs):
        """A new secret from `seed`."""
        self.secret = random.Random(seed).randint(1, self.high)
        self._state = State(episode_id=episode_id, step_count=0)
        return GuessObservation(prompt=f"Guess the number from 1 to {self.high}.")

    def step(self, action, timeout_s=None, **kwargs):
        """Compare a guess with the secret."""
        self._state.step_count += 1
        try:
            n = int(action.guess.strip())
        except ValueError:
            return GuessObservation(prompt="not a number")
        if n == self.secret:
            return GuessObservation(prompt="correct", done=True, reward=1.0)
        return GuessObservation(prompt="higher" if self.secret > n else "lower")

    @property
    def state(self):
        """Steps taken in this episode."""
        return self._state
