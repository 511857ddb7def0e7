"""Sweeps: a base recipe times axes of variation, each cell a recipe run, all sharing one step cache."""
