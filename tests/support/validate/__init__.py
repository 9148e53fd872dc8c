"""Checks for the deployment files (deploy/images, compose, kubernetes, dcos) that run without a Docker
engine or a cluster: used by tests/integration/test_deploy_*.py and tests/e2e/test_compose_wiring.py."""
