"""bt: a content-addressed, incremental build tool for large matrices of Docker images."""

__version__ = "0.1.0"
