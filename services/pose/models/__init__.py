"""Pose models: every one takes decoded images and returns label scores (and keypoints)."""
