"""Evaluation: metrics, text reports and plots."""
