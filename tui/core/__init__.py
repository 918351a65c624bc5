"""The service core: runs from draft to results, clusters and connections, log following, the config."""
