"""MM-IMDb, the flagship source: the raw layout's reader, its 23 genres, the download and safe
extraction of the archive, the synthetic MM-IMDb, and its shard plan."""
