"""camflow."""
