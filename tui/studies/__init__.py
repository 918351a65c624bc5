"""The studies: presets that plan experiments, results read from the database, analysis, comparison, charts, reports."""
