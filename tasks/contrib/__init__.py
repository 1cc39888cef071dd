"""Integrations with web frameworks and databases; each imports its framework lazily, so
``tasks`` never requires one."""
