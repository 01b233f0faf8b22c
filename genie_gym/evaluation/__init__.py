"""Metrics and the `genie-gym eval` report."""
