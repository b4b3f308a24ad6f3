"""Agent Exchange: the exchange daemon, its pure ledger core, journal and CLI."""
