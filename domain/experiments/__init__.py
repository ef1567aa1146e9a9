"""A/B experiments: definitions, deterministic assignment and the statistics read on
them. Pure: values in, values out (docs/experiments.md)."""
