"""What a run of a K2 job does, shared by its Dagster asset and its `k2` command, without Dagster: the packages it
draws on (the drain, metrics, incidents) stay below it."""
