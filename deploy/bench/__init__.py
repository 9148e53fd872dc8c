"""``tsdemo bench``: throughput of each stage and of the whole pipeline on the real local servers, each
figure beside a baseline measured in the same run (C tools for the Python hops, a no-op Spark sink for
the Spark job), written as a table, ``results.json``, ``results.png`` and profiles."""
