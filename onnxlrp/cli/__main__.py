"""``python -m onnxlrp.cli``: the ``onnxlrp`` command line."""

import sys

from . import main

sys.exit(main())
