"""scaffold: generate a consumer service or a job from templates/ and register it."""
