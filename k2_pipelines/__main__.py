import sys

from k2_pipelines.cli import main

sys.exit(main())
