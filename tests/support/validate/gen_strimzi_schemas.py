"""Regenerates the vendored Strimzi CRD schemas in schemas/strimzi-<version>/ (run by hand on a version bump).

Strimzi publishes no CRD files to a package registry, but it publishes the Java model its CRDs are
generated from (io.strimzi:api) and the generator (io.strimzi:crd-generator) to Maven Central. This runs
that generator exactly as Strimzi's build does, then keeps each CRD's openAPIV3Schema without the
descriptions (the schema is what validation needs; descriptions are most of the bytes).

    python -m tests.support.validate.gen_strimzi_schemas [--version 1.2.0] [--java /path/to/java21+]

Needs Java 21 or newer (crd-generator's class files), pyspark's Ivy jar and Maven Central.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from deploy.servers.artifacts import ivy_jar
from tests.support.validate.compose import COMPOSE_DIR, read_dotenv

SCHEMAS = Path(__file__).resolve().parent / "schemas"
# kind -> the model class in io.strimzi:api 1.x
MODELS = {
    "Kafka": "io.strimzi.api.kafka.model.kafka.Kafka",
    "KafkaNodePool": "io.strimzi.api.kafka.model.nodepool.KafkaNodePool",
    "KafkaTopic": "io.strimzi.api.kafka.model.topic.KafkaTopic",
    "KafkaUser": "io.strimzi.api.kafka.model.user.KafkaUser",
}


def _strip(node: object) -> object:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def generate(version: str, java: str, out: Path) -> None:
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "ivy.xml").write_text(
            '<ivy-module version="2.0"><info organisation="tsdemo" module="strimzi-crds"/>'
            '<configurations><conf name="default"/></configurations><dependencies>'
            f'<dependency org="io.strimzi" name="api" rev="{version}" conf="default->default"/>'
            f'<dependency org="io.strimzi" name="crd-generator" rev="{version}" conf="default->default"/>'
            "</dependencies></ivy-module>"
        )
        root = os.environ.get("DEFAULT_ARTIFACT_REPOSITORY", "https://repo1.maven.org/maven2/")
        (work / "ivysettings.xml").write_text(
            '<ivysettings><settings defaultResolver="central"/><resolvers>'
            f'<ibiblio name="central" m2compatible="true" usepoms="true" root="{root}"/>'
            "</resolvers></ivysettings>"
        )
        subprocess.run(
            [java, f"-Divy.home={work / 'ivy'}", "-jar", str(ivy_jar()), "-settings", str(work / "ivysettings.xml"),
             "-ivy", str(work / "ivy.xml"), "-confs", "default",
             "-retrieve", str(work / "lib/[artifact]-[revision].[ext]")],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        targets = [f"{cls}={work / (kind + '.yaml')}" for kind, cls in MODELS.items()]
        subprocess.run(
            [java, "-cp", str(work / "lib" / "*"), "io.strimzi.crdgenerator.CrdGenerator",
             "--crd-api-version", "v1", "--api-versions", "v1", "--storage-version", "v1", "--yaml", *targets],
            check=True,
        )  # fmt: skip
        for kind in MODELS:
            write_schemas(yaml.safe_load((work / f"{kind}.yaml").read_text()), kind, out,
                          f"io.strimzi:api:{version} via io.strimzi:crd-generator:{version} (Maven Central)")


def write_schemas(crd: dict, kind: str, out: Path, source: str) -> None:
    """Each served version's openAPIV3Schema of ``crd``, descriptions stripped, as
    ``<kind>-<group>-<version>.json`` in ``out`` (what tests/support/validate/kubernetes.py reads)."""
    out.mkdir(parents=True, exist_ok=True)
    for ver in crd["spec"]["versions"]:
        if not ver.get("served", True):
            continue
        schema = {
            "x-source": source,
            "x-group-version-kind": [crd["spec"]["group"], ver["name"], kind],
            **_strip(ver["schema"]["openAPIV3Schema"]),
        }
        path = out / f"{kind.lower()}-{crd['spec']['group']}-{ver['name']}.json"
        path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=read_dotenv(COMPOSE_DIR / ".env")["STRIMZI_VERSION"])
    parser.add_argument("--java", default=os.environ.get("JAVA21", "java"), help="a Java 21+ binary [env: JAVA21]")
    args = parser.parse_args(argv)
    generate(args.version, args.java, SCHEMAS / f"strimzi-{args.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
