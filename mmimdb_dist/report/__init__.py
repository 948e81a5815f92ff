"""What people read after training: comparison tables, evaluation reports and figures.

`compare` ranks finished runs (trained models and the TF-IDF baseline) in one table,
`evaluation` evaluates one checkpoint on dev or test and writes its report, and `figures`
draws the PNGs of that report with matplotlib's headless Agg backend. Nothing here trains
or changes a run folder's existing files.
"""
