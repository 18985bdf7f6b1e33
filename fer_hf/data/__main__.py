"""`python -m fer_hf.data SOURCE [--json] [--plot FILE.png] [--save DIR]` (fer_hf.data.summary)."""

import sys

from fer_hf.cli import run
from fer_hf.data.summary import main

if __name__ == "__main__":
    sys.exit(run(main))
