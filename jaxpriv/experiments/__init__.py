"""Experiments: sweeps over a grid of training configs, with tables and plots of the results."""
