"""Evaluation of generated video: FVD (I3D features), toy FVD (a toy-world classifier's features), CLIP
similarity and the toy-world oracle.

`evaluate(...)` (vidiff.eval.run) is the job behind `vidiff eval`; the modules below are its parts.
"""

from vidiff.eval.frechet import GaussianStats, frechet_distance
from vidiff.eval.fvd import FVDProtocol, fvd, i3d_features, load_i3d
from vidiff.eval.run import evaluate, format_summary

__all__ = [
    "FVDProtocol",
    "GaussianStats",
    "evaluate",
    "format_summary",
    "frechet_distance",
    "fvd",
    "i3d_features",
    "load_i3d",
]
