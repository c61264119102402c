"""`k2 spark fetch|settings`: Spark's jars for K2's tables, and the Spark settings that point it at K2's catalog."""

import argparse


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    spark = commands.add_parser("spark", help="Apache Spark on K2's tables")
    spark.add_argument("action", choices=["fetch", "settings"],
                       help="fetch: the Iceberg runtime and JDBC drivers (Maven); settings: spark-submit's --conf "
                            "options for K2's configured catalog")
    spark.set_defaults(run=run_spark)


def run_spark(args: argparse.Namespace) -> int:
    from k2_pipelines.lib.spark.jars import fetch_jars

    jars = fetch_jars()
    if args.action == "fetch":
        print(f"Spark's jars for K2 are in {jars}")
        return 0
    from k2_pipelines.lib.iceberg.catalog import catalog_properties
    from k2_pipelines.lib.spark.session import catalog_settings, session_settings

    settings = session_settings() | catalog_settings(catalog_properties())
    del settings["spark.master"]
    print(" \\\n".join(f"--conf {key}={value}" for key, value in settings.items()))
    return 0
