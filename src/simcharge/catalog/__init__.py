"""The catalog: zones, payment methods and plans, loaded from a TOML file."""
