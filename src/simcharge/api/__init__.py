"""What every HTTP endpoint shares: problem documents, dependencies, middleware."""
