"""The embedded demo world: seeded camera scenes rendered in numpy with exact ground truth."""
from samples.world.layout import CLASS_NAMES, VIEWPOINTS, viewpoint_geometry
from samples.world.render import GroundTruth, World

__all__ = ["CLASS_NAMES", "VIEWPOINTS", "GroundTruth", "World", "viewpoint_geometry"]
