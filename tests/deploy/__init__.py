"""Deployment artefacts: container image, compose file, LocalStack init, CloudFormation."""
