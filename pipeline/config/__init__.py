from pipeline.config.loader import load_config
from pipeline.config.models import PipelineConfig

__all__ = ["load_config", "PipelineConfig"]
