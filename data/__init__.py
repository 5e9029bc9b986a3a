"""Bundled data: the synthetic DCI sample and the tiny CLIP model."""
