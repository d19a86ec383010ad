"""Offline evaluation: the original project's split, ranking metrics, baselines, tuning, report."""
