"""Evaluation of generated video: FVD (I3D features), CLIP similarity and the toy-world oracle."""
