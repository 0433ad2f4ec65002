"""One module per method; each registers its builder with x2ct.models.registry."""
