"""``python -m densecap_eval``: the `densecap-eval` command, for launchers that start modules.

``torchrun --nproc-per-node N -m densecap_eval run ...`` scores on N processes
(`densecap_eval.engine.distributed`).
"""

import sys

from densecap_eval.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
