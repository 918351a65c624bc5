"""How things read on a terminal, for the app, the CLI and the reports: runs, safe text, tables."""
