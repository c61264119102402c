"""Run tags more than one defs package reads: the package that sets a tag and those that read it import it from
here, below them all."""

DRAIN_TAG = "k2/drain"  # dagster.yaml limits runs to one per value: drains of one table never overlap
INCIDENT_TAG = "k2/incident"  # a run launched to recover from an incident carries the incident's id
