"""Command-line interface: ``erasus demo``, ``erasus list``."""
