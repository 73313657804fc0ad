"""sjc_engine: lift a pretrained 2D diffusion model into a 3D voxel radiance field (Score Jacobian Chaining).

Importing the package is cheap and imports no torch; the modules that need torch import it themselves.
"""

from sjc_engine.config import SJCConfig

__all__ = ["SJCConfig"]
__version__ = "0.1.0"
