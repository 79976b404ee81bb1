"""Shared layers: segment-aware attention, causal transformer, distributions."""
