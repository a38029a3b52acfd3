"""Offline starter text models (sentiment, disaster), built from registry packages only."""
