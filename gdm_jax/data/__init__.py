"""Trajectories and return-to-go, on-device replay buffers."""
