"""Deployment: running the tsdemo stack locally and in containers."""
