"""The build: the stages in order with their cache (``build``), its record (``manifest``), the
accuracy table and gate (``accuracy``)."""
