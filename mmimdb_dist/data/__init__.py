"""Raw MM-IMDb, synthetic data, WebDataset shards and the streaming loaders."""
