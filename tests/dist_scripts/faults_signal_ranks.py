"""One rank of a launched `mmimdb-dist train` whose process id the test needs to signal.

Usage: faults_signal_ranks.py OUT_DIR TRAIN_CLI_ARGS...
Writes OUT_DIR/pid-rank<r> (r from the launcher's RANK), then runs the real CLI with the
remaining arguments and exits with its status.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mmimdb_dist.atomic import atomic_write_text
from mmimdb_dist.cli import main

if __name__ == "__main__":
    out = Path(sys.argv[1])
    atomic_write_text(out / f"pid-rank{os.environ.get('RANK', '0')}", str(os.getpid()))
    sys.exit(main(sys.argv[2:]))
