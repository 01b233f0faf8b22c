"""Unlabelled Procgen video: recording, sharded storage, clip loading, inspection."""
