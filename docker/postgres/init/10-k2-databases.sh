#!/bin/sh
# First start only (an empty data volume): one login role and one database of its own for each user of PostgreSQL.
# Passwords come from the container's environment (docker/.env); psql quotes them, so any character is safe here
# (the catalog's URI in compose.yaml needs K2_CATALOG_PG_PASSWORD URL-safe, though).
set -eu

create() {
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v name="$1" -v password="$2" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
SQL
}

create k2_catalog "$K2_CATALOG_PG_PASSWORD"          # the Iceberg SQL catalog
create dagster "$DAGSTER_PG_PASSWORD"                # Dagster's run, event-log and schedule storage
create schema_registry "$SCHEMA_REGISTRY_PG_PASSWORD"  # the Avro schemas and their ids
