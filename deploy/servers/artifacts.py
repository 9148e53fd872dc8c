"""Fetches the JVM artifacts the local stack needs from Maven Central into a local cache: the Kafka
broker's classpath and Spark's Kafka connector, both resolved with the Apache Ivy that ships inside
pyspark, so no Kafka tarball or Maven install is needed.

``python -m deploy.servers.artifacts --cache DIR`` fetches everything ahead of time (``make setup``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

log = logging.getLogger("deploy.artifacts")

KAFKA_VERSION = "4.1.1"
SCALA_BINARY_VERSION = "2.13"
# Kafka 4.1 logs through slf4j 1.7 and pulls log4j-api/core at runtime scope but no binding between
# them; without this one the broker silently drops all of its logs (slf4j's NOP logger).
LOG4J_SLF4J_BINDING = ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3")
# DEFAULT_ARTIFACT_REPOSITORY overrides it: Spark reads that variable for its own "central" resolver,
# so a mirror set there serves both.
MAVEN_CENTRAL = "https://repo1.maven.org/maven2/"
REPO_ROOT = Path(__file__).resolve().parents[2]
_MARKER = ".complete"


class ArtifactError(RuntimeError):
    """An artifact could not be resolved; the message carries the tail of Ivy's log."""


def kafka_version() -> str:
    return os.environ.get("TSDEMO_KAFKA_VERSION", KAFKA_VERSION)


def default_cache_dir() -> Path:
    return Path(os.environ.get("TSDEMO_CACHE_DIR") or REPO_ROOT / ".cache")


def spark_ivy_dir(cache_dir: Path | None = None) -> Path:
    """The Ivy home to give Spark as ``spark.jars.ivy``; the connector is pre-fetched into it."""
    return Path(cache_dir or default_cache_dir()) / "ivy"


def spark_connector_version() -> str:
    """The installed pyspark's version, unless ``TSDEMO_SPARK_CONNECTOR_VERSION`` names another."""
    return os.environ.get("TSDEMO_SPARK_CONNECTOR_VERSION") or importlib.metadata.version("pyspark")


def spark_kafka_package(version: str | None = None) -> str:
    """The ``spark.jars.packages`` coordinate of Spark's Kafka connector (see ``spark_connector_version``)."""
    return (
        f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY_VERSION}:{version or spark_connector_version()}"
    )


def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise ArtifactError("no java on PATH and JAVA_HOME unset: install a JDK 17 or newer")
    return found


def ivy_jar() -> Path:
    """The Ivy jar bundled in pyspark: the same resolver Spark uses for ``spark.jars.packages``."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError("pyspark is not installed; it provides the Ivy jar used to fetch artifacts")
    jars = sorted(Path(next(iter(spec.submodule_search_locations))).glob("jars/ivy-*.jar"))
    if not jars:
        raise ArtifactError("no jars/ivy-*.jar inside the installed pyspark")
    return jars[-1]


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    # Two test sessions or a test plus `make setup` may resolve at once; Ivy's retrieve is not atomic.
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_ivy_settings(path: Path) -> Path:
    # The resolver must be named "central" like Spark's: Ivy only trusts a cached module when the
    # resolver asking is the one that stored it, so any other name makes Spark download it again.
    root = os.environ.get("DEFAULT_ARTIFACT_REPOSITORY", MAVEN_CENTRAL)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<ivysettings>\n"
        '  <settings defaultResolver="central"/>\n'
        "  <resolvers>\n"
        f'    <ibiblio name="central" m2compatible="true" usepoms="true" root={quoteattr(root)}/>\n'
        "  </resolvers>\n"
        "</ivysettings>\n"
    )
    return path


def _run_ivy(ivy_home: Path, args: Sequence[str], log_file: Path, what: str) -> None:
    settings = _write_ivy_settings(ivy_home / "tsdemo-ivysettings.xml")
    cmd = [
        java_binary(),
        # Ivy would otherwise read and write ~/.ivy2; ivy.home keeps everything inside our cache.
        f"-Divy.home={ivy_home}",
        "-jar", str(ivy_jar()),
        "-settings", str(settings),
        "-cache", str(ivy_home / "cache"),
        *args,
    ]  # fmt: skip
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log.info("resolving %s (Ivy log: %s)", what, log_file)
    with open(log_file, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
        tail = "\n".join(lines[-15:])
        raise ArtifactError(f"could not resolve {what} (exit {proc.returncode}); end of {log_file}:\n{tail}")
    log.info("resolved %s in %.1fs", what, time.monotonic() - started)


def _kafka_ivy_module(version: str) -> str:
    # One ivy.xml instead of several `-dependency` runs so the conflict manager picks a single version
    # of the jars both dependencies share (log4j-api, slf4j-api).
    org, name, rev = LOG4J_SLF4J_BINDING
    return (
        '<ivy-module version="2.0">\n'
        f'  <info organisation="tsdemo" module="kafka-broker" revision="{version}"/>\n'
        '  <configurations><conf name="default"/></configurations>\n'
        "  <dependencies>\n"
        f'    <dependency org="org.apache.kafka" name="kafka_{SCALA_BINARY_VERSION}" rev="{version}"'
        ' conf="default->default"/>\n'
        f'    <dependency org="{org}" name="{name}" rev="{rev}" conf="default->default"/>\n'
        "  </dependencies>\n"
        "</ivy-module>\n"
    )


def _cached_jars(lib_dir: Path) -> list[Path] | None:
    marker = lib_dir / _MARKER
    if not marker.exists():
        return None
    jars = [lib_dir / name for name in marker.read_text().split()]
    return jars if jars and all(j.exists() for j in jars) else None


def kafka_classpath(cache_dir: Path | None = None, version: str | None = None) -> str:
    """The Kafka broker's classpath (jars joined with ``os.pathsep``), resolving it on first use.

    Idempotent and instant once resolved: a marker file in ``<cache>/kafka-<version>/`` lists the jars.
    """
    version = version or kafka_version()
    cache_dir = Path(cache_dir or default_cache_dir())
    lib_dir = cache_dir / f"kafka-{version}"
    jars = _cached_jars(lib_dir)
    if jars is None:
        with _locked(cache_dir / ".resolve.lock"):
            jars = _cached_jars(lib_dir)  # someone else may have finished while we waited
            if jars is None:
                jars = _resolve_kafka(cache_dir, lib_dir, version)
    return os.pathsep.join(str(j) for j in jars)


def _resolve_kafka(cache_dir: Path, lib_dir: Path, version: str) -> list[Path]:
    lib_dir.mkdir(parents=True, exist_ok=True)
    (lib_dir / _MARKER).unlink(missing_ok=True)
    module = lib_dir / "ivy.xml"
    module.write_text(_kafka_ivy_module(version))
    _run_ivy(
        spark_ivy_dir(cache_dir),
        [
            "-ivy", str(module),
            "-confs", "default",
            # -sync drops jars left by an earlier resolve of a different dependency set
            "-retrieve", str(lib_dir / "[artifact]-[revision](-[classifier]).[ext]"), "-sync",
        ],
        lib_dir / "ivy.log",
        f"Kafka {version} (kafka_{SCALA_BINARY_VERSION})",
    )  # fmt: skip
    jars = sorted(lib_dir.glob("*.jar"))
    if not any(j.name.startswith(f"kafka_{SCALA_BINARY_VERSION}-") for j in jars):
        raise ArtifactError(f"Ivy finished but no kafka_{SCALA_BINARY_VERSION} jar is in {lib_dir}")
    (lib_dir / _MARKER).write_text("\n".join(j.name for j in jars) + "\n")
    log.info("Kafka %s classpath: %d jars in %s", version, len(jars), lib_dir)
    return jars


def prefetch_spark_kafka_connector(ivy_dir: Path, version: str | None = None) -> None:
    """Put Spark's Kafka connector and its dependencies into the Ivy cache at ``ivy_dir``.

    Give Spark the same directory as ``spark.jars.ivy``: it then resolves ``spark.jars.packages`` from
    this cache without downloading. ``version`` defaults to ``spark_connector_version()``.
    """
    ivy_dir = Path(ivy_dir)
    coordinate = spark_kafka_package(version or spark_connector_version())
    marker = ivy_dir / f".prefetched-{coordinate.replace(':', '_')}"
    if marker.exists():
        return
    with _locked(ivy_dir / ".resolve.lock"):
        if not marker.exists():
            _resolve_connector(ivy_dir, coordinate, [])
            marker.touch()


def retrieve_spark_kafka_connector(dest: Path, cache_dir: Path | None = None) -> list[Path]:
    """Copy the Kafka connector's jars (with its dependencies) from the Ivy cache into ``dest``.

    For a Spark started without ``spark.jars.packages`` (spark-submit ``--jars``). Not Spark's own
    ``<ivy>/jars``: every Spark job that starts rewrites that folder, and it exists only after the first one.
    """
    ivy_dir = spark_ivy_dir(cache_dir)
    prefetch_spark_kafka_connector(ivy_dir)
    dest = Path(dest)
    with _locked(ivy_dir / ".resolve.lock"):
        _resolve_connector(ivy_dir, spark_kafka_package(), [
            "-retrieve", str(dest / "[artifact]-[revision](-[classifier]).[ext]"), "-sync",
        ])  # fmt: skip
    return sorted(dest.glob("*.jar"))


def _resolve_connector(ivy_dir: Path, coordinate: str, extra: Sequence[str]) -> None:
    org, name, rev = coordinate.split(":")
    try:
        _run_ivy(ivy_dir, ["-dependency", org, name, rev, "-confs", "default", *extra],
                 ivy_dir / "prefetch.log", coordinate)  # fmt: skip
    except ArtifactError as exc:
        raise ArtifactError(
            f"{exc}\n(the connector should match pyspark {importlib.metadata.version('pyspark')}; if the "
            "repository lacks that release, pin a pyspark it has, or set TSDEMO_SPARK_CONNECTOR_VERSION)"
        ) from None


def write_kafka_log4j2_config(path: Path, log_file: Path, level: str = "INFO") -> Path:
    """A log4j2 config that sends the broker's logs to ``log_file`` (rolled at 50 MB, 3 kept)."""
    log_path = quoteattr(str(log_file))
    rolled = quoteattr(f"{log_file}.%i")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Request, state-change and authorizer loggers write a line per request or partition at INFO.
    path.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="file" fileName={log_path} filePattern={rolled}>
      <PatternLayout pattern="[%d{{ISO8601}}] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="50 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="{level}"><AppenderRef ref="file"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.authorizer.logger" level="WARN"/>
  </Loggers>
</Configuration>
"""
    )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.servers.artifacts",
        description="Fetch the Kafka broker and Spark's Kafka connector from Maven Central into a cache.",
    )
    parser.add_argument(
        "--cache", type=Path, help="cache directory (default: <repo>/.cache) [env: TSDEMO_CACHE_DIR]"
    )
    parser.add_argument("--kafka-version", help=f"(default: {KAFKA_VERSION}) [env: TSDEMO_KAFKA_VERSION]")
    parser.add_argument(
        "--spark-version",
        help="connector version (default: the installed pyspark's) [env: TSDEMO_SPARK_CONNECTOR_VERSION]",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    cache = Path(args.cache or default_cache_dir()).resolve()
    try:
        classpath = kafka_classpath(cache, args.kafka_version)
        print(f"kafka {args.kafka_version or kafka_version()}: {len(classpath.split(os.pathsep))} jars ready")
        ivy_dir = spark_ivy_dir(cache)
        prefetch_spark_kafka_connector(ivy_dir, args.spark_version)
        package = spark_kafka_package(args.spark_version)
        print(f"{package}: cached in {ivy_dir} (give Spark spark.jars.ivy={ivy_dir})")
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
