"""Dreamer + ODT: the world model imagines for the decision transformer, whose real trajectories train the world model."""
