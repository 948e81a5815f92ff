"""Genre prediction for new movies from a checkpoint alone: `mmimdb-dist predict`.

The run layer finds a run's best or last checkpoint (`run/checkpoints.py`) and loads its
`inference/` export (`run/export.py`: safetensors weights, config, genre list, tokenizer or
vocabulary, and for the best checkpoint the dev-tuned thresholds and the shard
preprocessing); here, `inputs` reads movies
given on the command line, as an MM-IMDb-format folder or as JSONL, and prepares each
plot and poster exactly as `mmimdb-dist shard` and the eval loader did for training;
`predictor` batches them through the model. A movie predicted here gets the same
probabilities as the same movie evaluated from the shards.
"""
