"""Shared run machinery: mesh and sharding, checkpoints, metrics, progress, plots, the run loop."""
