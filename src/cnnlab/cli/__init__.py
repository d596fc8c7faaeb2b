"""The `cnnlab` command line: one module per command, each with `register(subparsers)`."""
