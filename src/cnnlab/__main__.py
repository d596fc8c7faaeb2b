"""`python -m cnnlab` is the `cnnlab` command."""

import os
import sys

from cnnlab.cli.main import main

if __name__ == "__main__":
    code = main()
    if "TORCHELASTIC_RUN_ID" in os.environ:
        # A torchrun worker: its files are written and its process group is left; skip the interpreter's
        # teardown, where gloo's background threads were seen to abort the process (SIGABRT) after a complete run.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
