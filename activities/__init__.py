"""Thin Temporal activities: call a port, translate its errors, nothing else."""
