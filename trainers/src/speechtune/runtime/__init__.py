"""The engine-independent training runtime."""
