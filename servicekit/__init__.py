"""Shared by every tsdemo service: the message contract, settings plumbing and service plumbing."""
