"""A line's life: active, grace, frozen, terminated; bucket expiry; warnings before each change."""
