"""nas_gym: neural architecture search as Gymnasium environments.

``import nas_gym`` registers the env ids with Gymnasium (lazy ``"module:Class"`` entry points)::

    env = gym.make("CellNAS-v0", budget={"params": 50_000}, dataset="digits", epochs=2)
"""

import gymnasium as gym

from .arch import Architecture, architecture_from_dict
from .models import build_model
from .wrappers import EnvFactory

__version__ = "0.1.0"

ENV_IDS = {
    "CellNAS-v0": "nas_gym.envs.cell_nas:CellNASEnv",
    "MacroNAS-v0": "nas_gym.envs.macro_nas:MacroNASEnv",
    "Net2Net-v0": "nas_gym.envs.net2net:Net2NetEnv",
    "ProgressiveNAS-v0": "nas_gym.envs.progressive:ProgressiveNASEnv",
}

for _id, _entry in ENV_IDS.items():
    if _id not in gym.registry:  # the factory adds the observation= / info_keys= options
        gym.register(id=_id, entry_point=EnvFactory(_entry), disable_env_checker=True)

__all__ = ["ENV_IDS", "Architecture", "architecture_from_dict", "build_model", "__version__"]
