"""Ray Tune search over fusion heads, their sizes, optimisation and the loss: `mmimdb-dist tune`.

    mmimdb-dist tune --config configs/tune/fusion_search.yaml
    mmimdb-dist tune --config configs/tune/fusion_search.yaml --resume          # after a crash
    mmimdb-dist tune --config configs/tune/fusion_search.yaml --address HOST:PORT  # a Ray cluster

Modules: `space` (the search YAML, validated against the training schema; Ray and Optuna
search spaces with the loss as a conditional choice), `trainable` (one trial = the
project's trainer in-process, reporting each dev evaluation with its checkpoint),
`runner` (Ray start-up, Tuner / Tuner.restore, ASHA and the searchers), `results` (the
trial table as CSV and Markdown, the best trial as a training YAML).
"""
