"""vidiff: video diffusion from raw video to generated video."""

from vidiff.errors import VidiffError

__version__ = "0.1.0"
__all__ = ["VidiffError", "__version__"]
