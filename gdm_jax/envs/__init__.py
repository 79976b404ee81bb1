"""Brax environments, wrappers (auto-reset, episode stats, partial observability) and on-device rollouts."""
