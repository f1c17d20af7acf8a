"""Alert rules evaluated on zone and line analytics."""
from pipeline.stages.alerts.rules import RuleEngine

__all__ = ["RuleEngine"]
