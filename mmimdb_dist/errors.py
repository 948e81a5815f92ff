"""Every user-facing error: the CLI prints one as one line naming the file or key, and exits 2.

All in one module with no imports, so any layer (the torch-free schema, the data readers,
the trainer) can raise them without an import cycle. Two internal signals stay beside the
records they carry and never reach the user as such: `data.sources.common.SampleSkipped` (a movie or
table row the shard writer counts as skipped) and `data.sources.mmimdb.download._CutShort` (a connection to retry).
"""


class MmimdbError(Exception):
    """A problem with the user's input (data, config, checkpoint, archive), not a bug."""


class ConfigError(MmimdbError, ValueError):
    """A configuration problem, phrased for the person who wrote the YAML or the --set."""


class DataError(MmimdbError):
    """Raw data, shards or manifests that are missing, corrupt or not what was expected."""


class DownloadError(MmimdbError):
    """A download that failed, was refused, or did not match its checksum."""


class CheckpointError(MmimdbError):
    """A checkpoint that is missing, incomplete or does not fit the configured run."""


class LogWriteError(MmimdbError):
    """metrics.jsonl or the TensorBoard log could not be written (a full disk, a lost mount)."""


class TrackerWriteError(MmimdbError):
    """A tracker could not record what the run gave it: `where` (its log folder or name) and
    `reason` (the OS's or the tracker's words)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


class NonFiniteLossError(MmimdbError):
    """The loss of a batch was NaN or infinite; training stops before the optimizer uses it."""


class PretrainedUnavailable(MmimdbError):
    """Pretrained files that are neither local nor cached, on a node that cannot download them."""


class OutputError(MmimdbError):
    """An output path that cannot or must not be written."""


class CompareError(MmimdbError):
    """A folder that holds no finished run, or a metric that cannot rank."""


class SubmitError(MmimdbError):
    """A submission that cannot be made as asked (options, grid, missing Slurm)."""


class InputError(DataError):
    """A movie given to predict that cannot be read or prepared."""


class NotRegularFile(OSError):
    """A path read as a file that names something else (a FIFO, a device, a folder); an
    `OSError`, so every reader's existing handling of unreadable files applies
    (`userfiles.open_regular` raises it)."""
