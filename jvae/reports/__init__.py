"""Reports on trained runs that go beyond `jvae.evaluate`: one module per system."""
