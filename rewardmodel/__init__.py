"""Reward-model registry, Bradley-Terry training, scoring (see the reward-model issue)."""
