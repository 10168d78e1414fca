"""Observation encoders: `forward(obs) -> (B, output_dim)` over a history of `n_obs_steps` frames.

Importing is cheap: the sentence encoder behind `LanguageEncoder` loads on its first use.
"""

from .language import LANGUAGE_DIM, LanguageEncoder
from .pointcloud import PointCloudEncoder
from .rgb import RGBEncoder
from .state import StateEncoder

__all__ = ["LANGUAGE_DIM", "LanguageEncoder", "PointCloudEncoder", "RGBEncoder", "StateEncoder"]
