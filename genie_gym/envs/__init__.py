"""Genie-v0: the world model as a Gymnasium environment."""
