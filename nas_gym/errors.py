"""The exceptions nas_gym raises.

Every user-facing error is a ``ValueError`` subclass so ``except ValueError`` keeps working, and
every message names the argument, the bad value and what is accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches

from gymnasium.error import ResetNeeded as _GymResetNeeded


class NasGymError(Exception):
    """Base class of every nas_gym error."""


class ConfigError(NasGymError, ValueError):
    """A bad argument: wrong value, unknown name, out of range."""


class ArchitectureError(NasGymError, ValueError):
    """A malformed or inconsistent architecture value."""


class DatasetNotFoundError(NasGymError, FileNotFoundError):
    """A torchvision dataset is not on disk and downloading was not asked for."""


class InvalidActionError(NasGymError, ValueError):
    """An action that the current mask forbids, with ``invalid_action="raise"``."""


class TransformError(NasGymError, ValueError):
    """An illegal network transform (Net2Net / EPNAS)."""


class ResetNeeded(NasGymError, _GymResetNeeded, RuntimeError):
    """``step()`` before ``reset()`` or after the episode ended (Gymnasium's ``ResetNeeded``)."""


def bad_value(arg: str, value: object, accepted: str | Iterable[object]) -> ConfigError:
    """Build the standard "argument, bad value, what is accepted" error."""
    if isinstance(accepted, str):
        what = accepted
    else:
        names = [str(a) for a in accepted]
        what = "one of " + ", ".join(repr(n) for n in names)
        if isinstance(value, str):
            close = get_close_matches(value, names, n=1)
            if close:
                what += f" (did you mean {close[0]!r}?)"
    return ConfigError(f"{arg}={value!r} is not accepted; expected {what}")
