"""Local deployment: the real servers as child processes and the artifacts they need."""
