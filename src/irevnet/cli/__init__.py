"""Command-line interface: one module per sub-command, registered in :mod:`irevnet.cli.main`."""
