"""What each ``payesh`` command does; :mod:`payesh.cli` parses the command line and
calls them.

* :mod:`payesh.commands.runs`: ``run``, ``backfill``, ``demo`` and ``train-builtup``;
* :mod:`payesh.commands.stores`: ``cities``, ``export``, ``history`` and ``expire``;
* :mod:`payesh.commands.portal`: ``serve`` and ``tokens``.

Every command takes the parsed ``argparse.Namespace`` and returns the exit code.
"""
