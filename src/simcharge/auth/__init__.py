"""Who is asking: API keys for integrations (customer sessions and staff come later)."""
