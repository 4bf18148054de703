"""Reports on stored runs: summary tables (``stress show``), later failure galleries and plots."""
