"""The main file spark-submit runs in the Spark Operator's driver pod: `tsdemo process` with the pod's
arguments. Spark has already started the JVM there, so the job's session joins it (the master must then be
the same k8s:// URL; the SparkApplication sets TSDEMO_SPARK_MASTER to it)."""

import sys

from deploy.cli import main

if __name__ == "__main__":
    sys.exit(main(["process", *sys.argv[1:]]))
