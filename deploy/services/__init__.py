"""Our services as processes on this machine: the registry of components (``components``), the one process
runner (``process``) and the pipeline assembled from them (``pipeline``), used by the local stack, the
benches and the tests alike."""
