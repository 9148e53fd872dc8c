"""Bakes Spark's Kafka connector into the processing image (run in its build stage).

1. Resolves org.apache.spark:spark-sql-kafka-0-10_2.13 at pyspark's version into ``<cache>/ivy`` with
   deploy.servers.artifacts, the same Ivy cache `tsdemo process` hands Spark as ``spark.jars.ivy``: its
   ``spark.jars.packages`` then resolves offline.
2. Links the resolved jars that pyspark does not ship into pyspark's ``jars/``: under spark-submit (the
   Spark Operator's driver pod) the JVM is up before the job sets ``spark.jars.packages``, so the packages
   would never be resolved there, and executors only see ``$SPARK_HOME/jars``. A jar pyspark already has
   (any version) is skipped: two versions of one library on a classpath is a bug waiting to happen.
   Symbolic links, not copies: the image would otherwise hold each of these jars twice (the cache is at
   the same path in the build stage and the image). Likewise a jar of the resolve that pyspark ships at
   the same version stays in the Ivy cache as a link to pyspark's copy.

Usage: python bake_connector.py --cache /opt/tsdemo/cache [--spark-jars DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

from deploy.servers.artifacts import prefetch_spark_kafka_connector, spark_ivy_dir, spark_kafka_package

# name-1.2.3.jar, name-1.2.3-classifier.jar; a name may hold digits and dashes (spark-sql-kafka-0-10_2.13).
_VERSIONED = re.compile(r"^(?P<name>.+?)-\d+\.\d+[^-]*(?:-[\w.]+)?\.jar$")


def artifact_name(jar: str) -> str:
    """``kafka-clients-3.9.1.jar`` -> ``kafka-clients`` (the name without its version)."""
    match = _VERSIONED.match(jar)
    return match.group("name") if match else jar.removesuffix(".jar")


def pyspark_jars() -> Path:
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pyspark is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "jars"


def bake(cache: Path, spark_jars: Path) -> list[str]:
    ivy = spark_ivy_dir(cache)
    prefetch_spark_kafka_connector(ivy)
    have = {artifact_name(j.name) for j in spark_jars.glob("*.jar")}
    added = []
    # Ivy's cache layout: <org>/<module>/jars/<module>-<rev>.jar; the build's cache holds only this resolve.
    for jar in sorted((ivy / "cache").glob("*/*/jars/*.jar")):
        if artifact_name(jar.name) not in have:
            (spark_jars / jar.name).symlink_to(jar)
            have.add(artifact_name(jar.name))
            added.append(jar.name)
        elif (spark_jars / jar.name).is_file() and not (spark_jars / jar.name).is_symlink():
            # The very jar pyspark ships (same name and version): the cache keeps a link to it, not a copy.
            jar.unlink()
            jar.symlink_to(spark_jars / jar.name)
    if not any(name.startswith("spark-sql-kafka-0-10_") for name in added + sorted(have)):
        raise SystemExit(f"no spark-sql-kafka-0-10 jar found in {ivy}")
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="cache directory (TSDEMO_CACHE_DIR in the image)")
    parser.add_argument("--spark-jars", type=Path, help="Spark's jars directory (default: pyspark's jars/)")
    args = parser.parse_args(argv)
    added = bake(args.cache, args.spark_jars or pyspark_jars())
    print(f"{spark_kafka_package()}: cached in {spark_ivy_dir(args.cache)}; added to Spark's jars: {' '.join(added)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
