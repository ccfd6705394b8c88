"""Fixtures shared by the deploy tests (the Docker engine and the image)."""

from tests.deploy.docker_helpers import docker_engine, image

__all__ = ["docker_engine", "image"]
