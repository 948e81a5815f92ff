"""Where samples come from: one home per source, each turning its records into shard samples.

- `mmimdb/`: MM-IMDb's raw layout (the reader, the download and safe extraction, the genres,
  the synthetic twin) and how it is planned into shards;
- `table.py`: any dataset given as one table of text, image paths and labels (and
  `synth_table.py`, a synthetic one);
- `common.py`: what every source shares with the shard writer: sample ids, the skip signal and
  report, image decoding and shard-time encoding, the plan a source hands the writer.

The shard writer (`data/shard.py`) runs a source's plan; everything after the shards (codecs,
loaders, models, reports) reads the manifest and never knows which source wrote it.
"""
