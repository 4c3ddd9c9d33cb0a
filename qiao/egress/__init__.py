"""How Qiao reaches URLs it did not choose: the SSRF guard and the remote media fetcher."""
