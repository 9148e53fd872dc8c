"""Grafana dashboards, alert rules and provisioning as code (see dashboards/README.md)."""
