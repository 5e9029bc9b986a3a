"""Batched, cached scoring: plan the unique inputs, encode each once, serve score tables."""
