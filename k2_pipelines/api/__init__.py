"""K2's HTTP API: the query layer served over FastAPI (`k2 api serve`); see docs/api.md."""
