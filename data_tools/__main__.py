"""`python -m data_tools` runs the curation job (same as `python -m data_tools.curate`)."""

from data_tools.curate import main

raise SystemExit(main())
