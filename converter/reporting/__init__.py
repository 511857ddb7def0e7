"""Human-facing reports: report.md (render_markdown), report.html (render_html) and side-by-side runs (compare_runs)."""
