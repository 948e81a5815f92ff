"""User-facing errors: the CLI prints them as one line naming the file or key, and exits 2."""


class MmimdbError(Exception):
    """A problem with the user's input (data, config, checkpoint, archive), not a bug."""


class ConfigError(MmimdbError, ValueError):
    """A configuration problem, phrased for the person who wrote the YAML or the --set.

    Here, not in config.py, so that every config section (train/config.py, models/config.py,
    losses.py, baseline.py) can raise it without importing the module that assembles them."""


class DataError(MmimdbError):
    """Raw data, shards or manifests that are missing, corrupt or not what was expected."""


class DownloadError(MmimdbError):
    """A download that failed, was refused, or did not match its checksum."""
