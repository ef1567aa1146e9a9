"""Discovery without I/O: what a search document holds, filters, intent parsing, spelling,
fusion and re-ranking, facets, autocomplete, ranking profiles and search metrics."""
