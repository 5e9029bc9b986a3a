"""Batched, cached scoring: plan the unique inputs, encode each once, serve score tables."""

from densecap_eval.engine.cache import EmbeddingCache
from densecap_eval.engine.engine import score_plan
from densecap_eval.engine.plan import ScoreTable, ScoringPlan

__all__ = ["EmbeddingCache", "ScoreTable", "ScoringPlan", "score_plan"]
