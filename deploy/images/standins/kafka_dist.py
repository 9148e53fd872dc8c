"""Lays out a Kafka distribution for the Kafka stand-in image from the project's Maven artifacts:
``python kafka_dist.py DIR`` writes ``DIR/libs`` (the broker's jars plus kafka-tools, for the topic and
api-versions commands the compose file's kafka-init and healthcheck run) and copies ``kafka/`` (the
scripts and the log config) beside it.

The jars come from Maven Central through the same Ivy and cache as the local stack's broker
(deploy.servers.artifacts), resolved as one module so each library is there once, at one version.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from deploy.servers import artifacts

HERE = Path(__file__).resolve().parent


def ivy_module(version: str) -> str:
    org, name, rev = artifacts.LOG4J_SLF4J_BINDING
    deps = [
        ("org.apache.kafka", f"kafka_{artifacts.SCALA_BINARY_VERSION}", version),
        ("org.apache.kafka", "kafka-tools", version),
        (org, name, rev),
    ]
    lines = "".join(f'    <dependency org="{o}" name="{n}" rev="{r}" conf="default->default"/>\n' for o, n, r in deps)
    return (
        '<ivy-module version="2.0">\n'
        f'  <info organisation="tsdemo" module="kafka-standin" revision="{version}"/>\n'
        '  <configurations><conf name="default"/></configurations>\n'
        f"  <dependencies>\n{lines}  </dependencies>\n"
        "</ivy-module>\n"
    )


def layout(target: Path, cache: Path | None = None) -> list[Path]:
    version = artifacts.kafka_version()
    cache = Path(cache or artifacts.default_cache_dir())
    work = cache / f"kafka-standin-{version}"
    work.mkdir(parents=True, exist_ok=True)
    module = work / "ivy.xml"
    module.write_text(ivy_module(version))
    libs = target / "libs"
    # The module-level runner of deploy.servers.artifacts (settings, cache, log, error with Ivy's tail).
    artifacts._run_ivy(
        artifacts.spark_ivy_dir(cache),
        ["-ivy", str(module), "-confs", "default",
         "-retrieve", str(libs / "[artifact]-[revision](-[classifier]).[ext]"), "-sync"],
        work / "ivy.log",
        f"Kafka {version} with kafka-tools",
    )  # fmt: skip
    shutil.copytree(HERE / "kafka", target, dirs_exist_ok=True)
    return sorted(libs.glob("*.jar"))


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    jars = layout(Path(sys.argv[1]))
    print(f"kafka stand-in: {len(jars)} jars in {sys.argv[1]}/libs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
