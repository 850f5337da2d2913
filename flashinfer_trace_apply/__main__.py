"""``python -m flashinfer_trace_apply`` is the command line."""

import sys

from .cli import main

sys.exit(main())
