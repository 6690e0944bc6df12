"""Rotation: value generators, the strategy interface and registry, and the strategies."""
