"""Record schemas, placeholder grammar, reason codes, manifest schema and time base."""
