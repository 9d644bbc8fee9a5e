"""Training: distribution strategy, the run loop, metrics and plots."""
