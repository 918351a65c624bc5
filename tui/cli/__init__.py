"""The headless `dinf` command line (no Textual)."""
