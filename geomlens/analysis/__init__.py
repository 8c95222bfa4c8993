"""Distance-vs-probability analysis (thesis Table 6.1): config, streaming pipeline, summary."""

from geomlens.analysis.config import AnalyzeConfig
from geomlens.analysis.pipeline import AnalysisResult, analyze_tokens
from geomlens.analysis.summary import summarize, table_frame, table_markdown

__all__ = ["AnalyzeConfig", "AnalysisResult", "analyze_tokens", "summarize", "table_frame",
           "table_markdown"]
