"""One module per tab of the lab; each lays itself out inside the caller's Blocks."""
