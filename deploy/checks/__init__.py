"""Checks of a deployment's results: ``tsdemo verify`` (the ledger against what InfluxDB stored) and
``tsdemo anomalies score|evaluate`` (the detectors against the generator's ground-truth labels, on a
running pipeline's results or offline with the detector harness)."""
