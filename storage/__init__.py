"""InfluxDB storage: settings, a retrying line-protocol writer, InfluxQL queries, and the idempotent
schema setup (database, retention policies, rollup continuous queries). See storage/README.md.
"""
