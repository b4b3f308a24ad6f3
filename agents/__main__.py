"""``python -m agents ROLE --id ID ...``: see ``agents.cli``."""

from agents.cli import main

raise SystemExit(main())
