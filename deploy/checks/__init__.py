"""Checks of a running deployment's results: ``tsdemo verify`` (the ledger against what InfluxDB stored)."""
