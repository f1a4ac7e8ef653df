"""sight-ops shared library: everything two functions need."""
