"""Alert rules evaluated on zone and line analytics."""
from pipeline.sinks.alerts.rules import RuleEngine

__all__ = ["RuleEngine"]
