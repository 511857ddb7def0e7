"""Human- and CI-facing outputs of a report dict (the report.json contract), and nothing else:

- report.md (markdown.render_markdown) and report.html (html.render_html, plots in plots.py);
- several runs against a baseline (compare.comparison, rendered by compare_render);
- JUnit XML (junit.render_junit) and GitHub Actions annotations and job summary (github).

Shared pieces: text (how a value is written), rows (one row per artifact and backend), uncertainty (intervals
and three-way checks, from converter.stats), summary (the verdict and failures first), cells (table cells).
"""
