"""Weight conversion between the two quickstarts and the comparisons that prove they agree."""
