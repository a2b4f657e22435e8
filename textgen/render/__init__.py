"""Everything the user sees drawn: console.py (Rich progress, tables, terminal charts). Called by
the CLI with plain data; imports no torch."""
