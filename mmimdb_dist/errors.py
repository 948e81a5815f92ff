"""User-facing errors: the CLI prints them as one line naming the file or key, and exits 2."""


class MmimdbError(Exception):
    """A problem with the user's input (data, config, checkpoint, archive), not a bug."""


class DataError(MmimdbError):
    """Raw data, shards or manifests that are missing, corrupt or not what was expected."""


class DownloadError(MmimdbError):
    """A download that failed, was refused, or did not match its checksum."""
