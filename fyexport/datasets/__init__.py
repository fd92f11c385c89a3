"""Bundled data set generators."""
