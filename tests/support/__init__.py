"""Helpers shared by the test suites: servers on free ports and small model fixtures."""
