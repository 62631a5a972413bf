"""Shared pytest fixtures for every tier."""
