"""Everything the user sees drawn, from the plain records of textgen.reports; imports no torch.
console.py (the shared consoles, errors and notes) · training.py (progress while work runs) ·
tables.py (result tables) · charts.py (the loss chart) · samples.py (samples side by side) ·
interactive.py (settings and next tokens) · insight.py (the insight views) · fitting.py (tables
that fit any terminal width) · html.py + templates/ (the report page)."""
