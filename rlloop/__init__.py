"""Policies, PPO rounds and on-policy sampling back into the annotation queue."""
