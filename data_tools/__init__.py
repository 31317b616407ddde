"""Curation: raw videos into training clips and a manifest (cuts, motion, captions); local or on Ray."""
