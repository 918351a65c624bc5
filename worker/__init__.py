"""Cluster-side worker. Importing this package imports nothing (the laptop imports worker.contract)."""
