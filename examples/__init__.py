"""Examples a user runs from the repository root; not part of the installed packages."""
