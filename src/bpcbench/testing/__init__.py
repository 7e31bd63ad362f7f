"""Helpers for tests: tiny synthetic models and fixtures."""
