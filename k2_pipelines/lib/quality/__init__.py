"""Data quality: Great Expectations suites over what each K2 asset wrote, their outcomes and reports."""

import os

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # before Great Expectations is imported: no usage reports
